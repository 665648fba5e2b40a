"""The `faceit-etl` command: its verbs (main), progress display, end-of-run summary and validation report.

`main` is entered before the command's modules are imported (half a second of them), so that Ctrl-C at
start-up is said as at any later moment (see interrupt)."""

from __future__ import annotations

from typing import Any

__all__ = ["RedactingFormatter", "main"]


def main(argv: list[str] | None = None) -> int:
    from faceit_etl.cli.interrupt import quiet_after_interrupt

    with quiet_after_interrupt():
        from faceit_etl.cli.main import main as command

        return command(argv)


def __getattr__(name: str) -> Any:
    if name == "RedactingFormatter":
        from faceit_etl.cli.main import RedactingFormatter

        return RedactingFormatter
    raise AttributeError(f"module 'faceit_etl.cli' has no attribute {name!r}")
