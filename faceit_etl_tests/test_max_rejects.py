"""`max_rejects` on real runs: within the limit the run loads the valid entries and keeps the
rejects with their reasons; one reject more fails it before anything is written. Set by flag,
`--config`, run config or environment by the one precedence rule; a value that means no limit is
refused by name before anything runs."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from pydantic import ValidationError

from faceit_etl.defs.resources import MigrationSettings, describe_invalid
from faceit_etl.generate import generate_users
from faceit_etl_tests.conftest import make_resources, write_json
from faceit_etl_tests.test_cli import faceit_etl, workdir  # noqa: F401  (the fixture)
from faceit_etl_tests.test_pipeline import checks_by_name, run

ENTRIES = 20
HOW_TO_RAISE = (
    "Fix these entries in the file and run again, or set force (load the valid entries) or max_rejects "
    "(a count, or a percentage such as 1%) in the launchpad's migration_settings "
    "(CLI: --force, --max-rejects; environment: MIGRATION_FORCE, MIGRATION_MAX_REJECTS)"
)


def file_with_rejects(folder: Path, rejected: int) -> Path:
    """ENTRIES entries, the last `rejected` of them with a negative user_id."""
    users = generate_users(ENTRIES - rejected, seed=31) + [{"user_id": -(i + 1)} for i in range(rejected)]
    return write_json(folder / "data.json", {"users": users})


def loaded(db) -> tuple[int, list] | None:
    if db.execute("SELECT to_regclass('users')").fetchone()[0] is None:
        return None
    users = db.execute("SELECT count(*) FROM users").fetchone()[0]
    rejects = db.execute("SELECT source_index, field, reason FROM migration_rejects ORDER BY source_index").fetchall()
    return users, rejects


def reasons(rejected: int) -> list[tuple]:
    return [(ENTRIES - rejected + i, "user_id", "must be a positive Telegram id") for i in range(rejected)]


# (max_rejects, rejected entries of 20, loads): exactly at the limit loads, one more fails.
BOUNDARIES = {
    "count, at the limit": ("2", 2, True),
    "count, one more": ("2", 3, False),
    "10% of 20, at the limit": ("10%", 2, True),
    "10% of 20, one more": ("10%", 3, False),
    "12.5% of 20 is 2.5: 2 load": ("12.5%", 2, True),
    "12.5% of 20 is 2.5: 3 do not": ("12.5%", 3, False),
    "default 0, one reject": (None, 1, False),
}


@pytest.mark.parametrize(("max_rejects", "rejected", "loads"), BOUNDARIES.values(), ids=BOUNDARIES.keys())
def test_exactly_at_the_limit_loads_and_one_more_fails_before_writing(db, database_url, tmp_path, max_rejects, rejected, loads):
    source = file_with_rejects(tmp_path, rejected)
    given = {} if max_rejects is None else {"max_rejects": max_rejects}
    result = run(make_resources(database_url, source, tmp_path, **given))

    assert result.success is loads
    check = checks_by_name(result)["no_rejected_entries"]
    limit = {"2": 2, "10%": 2, "12.5%": 2, None: 0}[max_rejects]
    assert (check.metadata["rejected"].value, check.metadata["limit"].value) == (rejected, limit)
    assert check.metadata["max_rejects"].value == (max_rejects or "0")
    assert not check.passed
    head = check.description.splitlines()[0]
    if loads:
        assert check.severity == dg.AssetCheckSeverity.WARN
        share = f" (at most {limit} of {ENTRIES})" if max_rejects.endswith("%") else ""  # a count says it once
        assert head == f"{rejected} of {ENTRIES} entries rejected, within max_rejects {max_rejects}{share}: loading the rest"
        assert loaded(db) == (ENTRIES - rejected, reasons(rejected))
    else:
        assert check.severity == dg.AssetCheckSeverity.ERROR
        assert head == (
            f"{rejected} of {ENTRIES} entries rejected, more than max_rejects {max_rejects or '0'} allows"
            f"{f' (at most {limit} of {ENTRIES})' if (max_rejects or '').endswith('%') else ''}; "
            f"nothing was written. {HOW_TO_RAISE}"
        )
        assert loaded(db) is None  # not even the tables were created
    assert check.description.splitlines()[2] == f"- entry {ENTRIES - rejected + 1} (no valid user_id): user_id: must be a positive Telegram id"


def test_force_loads_whatever_the_limit_and_shows_it(db, database_url, tmp_path):
    result = run(make_resources(database_url, file_with_rejects(tmp_path, 5), tmp_path, max_rejects="1", force=True))

    assert result.success
    check = checks_by_name(result)["no_rejected_entries"]
    assert (check.severity, check.metadata["rejected"].value, check.metadata["limit"].value) == (
        dg.AssetCheckSeverity.WARN, 5, ENTRIES
    )
    assert check.metadata["max_rejects"].value == "force: any number"
    assert loaded(db) == (ENTRIES - 5, reasons(5))


def test_no_reject_passes_and_shows_the_limit(db, database_url, tmp_path):
    result = run(make_resources(database_url, file_with_rejects(tmp_path, 0), tmp_path, max_rejects="1%"))

    assert result.success
    check = checks_by_name(result)["no_rejected_entries"]
    assert check.passed and check.description is None
    assert (check.metadata["rejected"].value, check.metadata["limit"].value) == (0, 0)  # 1% of 20 is 0.2


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "expected a whole number of rejects (5) or a percentage of the entries read (1%), at least 0"),
        ("abc", "expected a whole number of rejects (5) or a percentage of the entries read (1%), at least 0"),
        ("1.5", "expected a whole number of rejects (5) or a percentage of the entries read (1%), at least 0"),
        ("150%", "a percentage of the entries read is at most 100%"),
    ],
)
def test_a_value_that_means_no_limit_is_refused_by_name_in_run_config_and_environment(monkeypatch, value, message):
    with pytest.raises(ValidationError) as refused:
        MigrationSettings(max_rejects=value)
    assert describe_invalid(refused.value) == f"max_rejects {value!r}: {message}"
    monkeypatch.setenv("MIGRATION_MAX_REJECTS", value)
    with pytest.raises(ValidationError) as refused:
        MigrationSettings()
    assert describe_invalid(refused.value) == f"MIGRATION_MAX_REJECTS={value!r}: {message}"


def test_the_cli_refuses_a_meaningless_limit_before_anything_runs(workdir, database_url, db):  # noqa: F811
    source = file_with_rejects(workdir, 1)
    for args, env, said in [
        (["--max-rejects", "150%"], {}, "faceit-etl: max_rejects '150%': a percentage of the entries read is at most 100%"),
        ([], {"MIGRATION_MAX_REJECTS": "1.5"}, "faceit-etl: MIGRATION_MAX_REJECTS='1.5': expected a whole number of "
                                              "rejects (5) or a percentage of the entries read (1%), at least 0"),
    ]:
        done = faceit_etl(workdir, database_url, "migrate", str(source), *args, env=env)
        assert (done.returncode, done.stdout.strip()) == (2, said), done.stdout + done.stderr
    assert not (workdir / "backups").exists()  # not even the source was backed up
    assert db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0


def test_the_cli_loads_within_the_limit_exits_2_beyond_it_and_a_flag_beats_config_and_environment(
    workdir, database_url, db  # noqa: F811
):
    source = file_with_rejects(workdir, 2)
    config = workdir / "settings.yaml"
    config.write_text("max_rejects: 1\n")  # a YAML number

    beyond = faceit_etl(workdir, database_url, "--config", str(config), "migrate", str(source), env={"MIGRATION_MAX_REJECTS": "5"})
    assert beyond.returncode == 2, beyond.stdout + beyond.stderr
    assert (f"      2 of {ENTRIES} entries rejected, more than max_rejects 1 allows; nothing was written. {HOW_TO_RAISE}"
            in beyond.stdout.splitlines())
    assert loaded(db) is None

    within = faceit_etl(workdir, database_url, "--config", str(config), "migrate", str(source), "--max-rejects", "10%",
                        env={"MIGRATION_MAX_REJECTS": "0"})
    assert within.returncode == 0, within.stdout + within.stderr
    assert f"  entries: {ENTRIES} read, {ENTRIES - 2} accepted, 2 rejected" in within.stdout.splitlines()
    assert loaded(db) == (ENTRIES - 2, reasons(2))
    used = db.execute("SELECT metadata->'settings'->>'max_rejects' FROM migration_logs WHERE status = 'success'").fetchone()[0]
    assert used == "10%"

    from_environment = faceit_etl(workdir, database_url, "migrate", str(source), env={"MIGRATION_MAX_REJECTS": "2"})
    assert from_environment.returncode == 0, from_environment.stdout + from_environment.stderr
    assert loaded(db) == (ENTRIES - 2, sorted(reasons(2) * 2))  # each run keeps its rejects


@pytest.mark.parametrize(("written", "held"), [("2.0", "2"), ("0.0", "0"), ("3", "3"), ("'5%'", "5%")])
def test_a_whole_yaml_number_in_config_is_that_count(written, held):
    from faceit_etl.cli.main import yaml_max_rejects

    import yaml
    assert yaml_max_rejects(yaml.safe_load(f"max_rejects: {written}")["max_rejects"], Path("s.yaml")) == held


def test_the_cli_takes_a_whole_yaml_float_as_a_count(workdir, database_url, db):  # noqa: F811
    source = file_with_rejects(workdir, 2)
    config = workdir / "settings.yaml"
    config.write_text("max_rejects: 2.0\n")

    done = faceit_etl(workdir, database_url, "--config", str(config), "migrate", str(source))

    assert done.returncode == 0, done.stdout + done.stderr
    assert loaded(db)[0] == ENTRIES - 2


def test_a_yaml_number_that_is_no_whole_count_is_refused_in_plain_words(workdir, database_url, db):  # noqa: F811
    source = file_with_rejects(workdir, 2)
    config = workdir / "settings.yaml"
    for written in ("2.5", "-1.0", ".inf"):
        config.write_text(f"max_rejects: {written}\n")

        refused = faceit_etl(workdir, database_url, "--config", str(config), "migrate", str(source))

        assert refused.returncode == 2, refused.stdout + refused.stderr
        shown = {"2.5": "2.5", "-1.0": "-1.0", ".inf": "inf"}[written]
        assert (f"--config {config}: max_rejects {shown}: expected a whole number of rejects (5) or a percentage "
                "of the entries read (1%), at least 0") in refused.stdout
        assert "valid string" not in refused.stdout + refused.stderr
        assert loaded(db) is None
