"""`python -m faceit_etl.cli`, the same as the `faceit-etl` command."""

import sys

from faceit_etl.cli import main

sys.exit(main())
