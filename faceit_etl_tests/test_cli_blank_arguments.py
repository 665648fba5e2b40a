"""A blank argument names nothing: `--report ""` was the current folder (`Path("")` is `.`), `--output-dir " "`
a new folder named by a space, `--backup-path ""` the current folder; each is a usage error, exit 2."""

from __future__ import annotations

import pytest

from faceit_etl.cli.main import build_parser


@pytest.mark.parametrize("blank", ["", " ", "\t"])
@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["validate", "data.json", "--report", "{}"], "--report"),
        (["backup", "data.json", "--output-dir", "{}"], "--output-dir"),
        (["rollback", "--backup-path", "{}"], "--backup-path"),
        (["rollback", "--migration-id", "{}"], "--migration-id"),
        (["--database-url", "{}", "status"], "--database-url"),
        (["--config", "{}", "status"], "--config"),
        (["migrate", "{}"], "json_file"),
    ],
)
def test_a_blank_argument_is_a_usage_error_naming_it(capsys, args, flag, blank):
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args([a.format(blank) for a in args])

    assert stopped.value.code == 2
    assert f"argument {flag}: empty or only white space, which names nothing" in capsys.readouterr().err
