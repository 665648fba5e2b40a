"""pandera, imported without changing the caller's environment.

On import pandera sets SPARK_LOCAL_IP and PYARROW_IGNORE_TIMEZONE in `os.environ` when they are unset
(for pyspark, which this package does not use). faceit-etl is imported into the bot's own process, whose
environment must stay as it was: the variables pandera added are removed again once it is loaded. When
pandera was already loaded (by the caller), its environment is the caller's business and is left alone.
Every module of the package imports pandera from here.
"""

from __future__ import annotations

import os
import sys

_PANDERA_SETS = ("SPARK_LOCAL_IP", "PYARROW_IGNORE_TIMEZONE")
_added = [] if "pandera" in sys.modules else [name for name in _PANDERA_SETS if name not in os.environ]

import pandera.pandas as pa  # noqa: E402 (after noting what the environment lacked)

for _name in _added:
    os.environ.pop(_name, None)

__all__ = ["pa"]
