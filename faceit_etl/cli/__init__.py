"""The `faceit-etl` command: its verbs (main), progress display, end-of-run summary and validation report."""

from faceit_etl.cli.main import RedactingFormatter, main

__all__ = ["RedactingFormatter", "main"]
