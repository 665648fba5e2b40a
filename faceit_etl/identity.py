"""What a migration's frames depend on, as one hash: the file's bytes, the setting that changes
their meaning (the source time zone), and this code with the libraries that parse and judge.

Equal identities give equal frames, so a re-run may reuse an earlier run's validation outcome and
may recognise a target it has already loaded (see `validation/memo.py`, `target/fingerprint.py`).
Any change of code or library version gives a new identity: nothing is reused across them.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib.metadata import version
from pathlib import Path

_LIBRARIES = ("numpy", "orjson", "pandas", "pandera", "pyarrow", "pysimdjson")


@cache
def code_version() -> str:
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    for library in _LIBRARIES:
        digest.update(f"{library}=={version(library)}\0".encode())
    return digest.hexdigest()


def input_identity(source_sha256: str | None, source_timezone: str) -> str:
    if not source_sha256:  # never one identity for unknown contents: that would reuse a stranger's
        raise ValueError("the source's sha256 is unknown, so the run's input cannot be identified")
    return hashlib.sha256(f"{source_sha256}\0{source_timezone}\0{code_version()}".encode()).hexdigest()
