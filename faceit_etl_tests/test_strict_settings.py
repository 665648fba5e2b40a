"""Every numeric and boolean setting is read strictly from every source (flag, environment,
--config YAML, run config): ASCII digits only, nothing around them, no underscores or hex, a null
refused naming the setting, a bool no number. Python's int() and float() would take ' 3', '1_0'
and '３'; YAML 1.1 reads 0x3 as 3."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import dagster as dg
import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from faceit_etl.api import max_concurrent_of, resolved_settings
from faceit_etl.cli.main import UsageError, build_parser, cli_settings
from faceit_etl.definitions import defs
from faceit_etl.errors import SettingsInvalid
from faceit_etl.defs.resources import (
    ENVIRONMENT,
    MAX_CONCURRENT_VARIABLE,
    MigrationSettings,
    SettingsError,
    describe_invalid,
)
from faceit_etl_tests.conftest import examples

FLAGS = {
    "batch_size": "--batch-size", "max_concurrent": "--max-concurrent",
    "max_prune_fraction": "--max-prune-fraction", "max_rejects": "--max-rejects",
}
BOOLEANS = ("backup_tables", "force", "truncate", "prune", "dry_run")
SOURCES = ("flag", "environment", "config", "run config")
# max_concurrent is the executor's: its variable is read for the job, its run config is the executor's own section.
VARIABLES = {**{name: variable for name, (variable, _) in ENVIRONMENT.items()}, "max_concurrent": MAX_CONCURRENT_VARIABLE}


@contextlib.contextmanager
def environment(**variables: str):
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name) if value is None else os.environ.__setitem__(name, value)


def read(source: str, name: str, value, *, yaml_text: str | None = None):
    """The setting as the settings read from `source` hold it, or the refusal's message (str,
    prefixed 'refused: ')."""
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder, "data.json")
        data.write_text('{"users": []}')
        argv = ["migrate", str(data)]
        variables = {}
        if source == "flag":
            argv += [FLAGS[name], value]
        elif source == "environment":
            variables[VARIABLES[name]] = value
        elif source == "config":
            config = Path(folder, "settings.yaml")
            config.write_text(yaml_text if yaml_text is not None else yaml.safe_dump({name: value}))
            argv = ["--config", str(config), *argv]
        try:
            with environment(**variables):
                if source == "run config":
                    if name == "max_concurrent":
                        return executor_max_concurrent(value)
                    return getattr(MigrationSettings(**{name: value}), name)
                errors = io.StringIO()
                with contextlib.redirect_stderr(errors):
                    try:
                        args = build_parser().parse_args(argv)
                    except SystemExit:
                        return "refused: " + errors.getvalue().strip().splitlines()[-1]
                args.argv = argv
                given = cli_settings(args)
                settings = resolved_settings(given)
                return max_concurrent_of(given) if name == "max_concurrent" else getattr(settings, name)
        except ValidationError as exc:
            return "refused: " + describe_invalid(exc)
        except (UsageError, SettingsError, SettingsInvalid) as exc:
            return f"refused: {exc}"


def executor_max_concurrent(value):
    """max_concurrent in the run config of migrate_job's executor, as Dagster judges it."""
    execution = {"execution": {"config": {"multiprocess": {"max_concurrent": value}}}}
    try:
        resolved = dg.validate_run_config(defs.resolve_job_def("migrate_job"), execution)
    except dg.DagsterInvalidConfigError as exc:
        return f"refused: {exc}"
    return resolved["execution"]["multi_or_in_process_executor"]["multiprocess"]["max_concurrent"]


def names(refused: str, source: str, name: str) -> bool:
    """The refusal names the setting: its flag (or, for a flag's text judged with the others, its
    name), its variable, or its key."""
    return {"flag": FLAGS.get(name), "environment": VARIABLES[name]}.get(source, name) in refused or (
        source == "flag" and f"{name} " in refused
    )


FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
SPOILERS = {
    "space before": lambda t: " " + t,
    "space after": lambda t: t + " ",
    "tab": lambda t: "\t" + t,
    "newline after": lambda t: t + "\n",
    "no-break space": lambda t: t + "\u00a0",
    "full-width digits": lambda t: t.translate(FULL_WIDTH),
    "arabic-indic digits": lambda t: t.translate(ARABIC_INDIC),
    "underscore": lambda t: t[0] + "_" + t[1:] if len(t) > 1 else t + "_0",
    "plus sign": lambda t: "+" + t,
    "hex": lambda t: "0x" + t,
}


def numeric_texts():
    counts = st.integers(1, 10**7).map(str)
    return st.one_of(
        st.tuples(st.sampled_from(["batch_size", "max_concurrent"]), counts),
        st.tuples(st.just("max_rejects"), st.integers(0, 10**7).map(str)),
        st.tuples(st.just("max_prune_fraction"), st.sampled_from(["0", "1", "0.1", "0.57", "0.0001", "1.0"])),
    )


@settings(deadline=None)
@given(setting=numeric_texts(), spoiler=st.sampled_from(sorted(SPOILERS)), source=st.sampled_from(SOURCES))
def test_a_number_spelled_any_other_way_than_ascii_digits_is_refused_from_every_source(setting, spoiler, source):
    name, text = setting
    # In the executor's run config a count is a YAML number; the other settings take their text too.
    clean = read(source, name, int(text) if (source, name) == ("run config", "max_concurrent") else text)
    assert not str(clean).startswith("refused"), clean
    assert clean == (float(text) if name == "max_prune_fraction" else text if name == "max_rejects" else int(text))

    spoiled = SPOILERS[spoiler](text)
    refused = read(source, name, spoiled)

    assert str(refused).startswith("refused: "), (spoiled, refused)
    assert names(refused, source, name), refused


@settings(deadline=None)
@given(name=st.sampled_from(BOOLEANS), word=st.sampled_from(["true", "false", "yes", "0", "1"]),
       spoiler=st.sampled_from(["space before", "space after", "tab", "full-width digits"]),
       source=st.sampled_from(["environment", "config", "run config"]))
def test_a_boolean_word_with_anything_around_it_is_refused_from_every_source(name, word, spoiler, source):
    spoiled = SPOILERS[spoiler](word)
    assume(spoiled != word)  # full-width digits leave words as they are
    refused = read(source, name, spoiled)
    assert str(refused).startswith("refused: "), (spoiled, refused)
    assert names(refused, source, name), refused
    assert "expected true or false" in refused


@pytest.mark.parametrize("name", BOOLEANS)
@pytest.mark.parametrize("number", [0, 1, 1.0])
def test_a_number_is_no_boolean_in_config_or_run_config(name, number):
    for source in ("config", "run config"):
        assert read(source, name, number) == f"refused: {name} {number!r}: expected true or false"


@pytest.mark.parametrize("name", ["batch_size", "max_concurrent", "max_rejects", "max_prune_fraction", "force"])
@pytest.mark.parametrize("spelling", ["null", "~", ""])
def test_a_null_in_config_is_refused_naming_the_setting_never_the_default(name, spelling):
    refused = read("config", name, None, yaml_text=f"{name}: {spelling}\n")
    assert refused.startswith("refused: --config ")
    assert refused.endswith(f"settings.yaml: {name} has no value (null); give one, or remove the key")


@pytest.mark.parametrize(("name", "written"), [
    ("max_rejects", "0x3"), ("max_rejects", "1_0"), ("max_rejects", "0o7"), ("max_rejects", "0b11"),
    ("max_rejects", "1:30"), ("batch_size", "0x10"), ("batch_size", "1_000"), ("max_concurrent", "0b11"),
    ("max_prune_fraction", "0_1"), ("max_prune_fraction", "0.1_0"),
])
def test_yaml_numbers_other_than_plain_decimals_are_refused(name, written):
    refused = read("config", name, None, yaml_text=f"{name}: {written}\n")
    assert refused.startswith(f"refused: {name} '{written}': expected "), refused


def test_a_yaml_boolean_as_max_rejects_says_a_count_or_a_percentage():
    refused = read("config", "max_rejects", None, yaml_text="max_rejects: true\n")
    assert refused.startswith("refused: --config ") and refused.endswith(
        "settings.yaml: max_rejects True: expected a whole number of rejects (5) or a percentage of the entries "
        "read (1%), at least 0"
    ), refused
    assert read("run config", "max_rejects", True) == (
        "refused: max_rejects True: expected a whole number of rejects (5) or a percentage of the entries read "
        "(1%), at least 0"
    )


@pytest.mark.parametrize(("name", "written", "value"), [
    ("max_rejects", "3", "3"), ("max_rejects", "2.0", "2"), ("max_rejects", "'1%'", "1%"),
    ("batch_size", "500", 500), ("max_prune_fraction", "0.25", 0.25), ("max_prune_fraction", "1", 1.0),
    ("force", "true", True), ("prune", "no", False),
])
def test_plain_yaml_values_are_read_as_written(name, written, value):
    assert read("config", name, None, yaml_text=f"{name}: {written}\n") == value


def fraction_texts():
    """Decimals from 0 to 1 as people write them, some with more digits than a float keeps."""
    return st.one_of(
        st.just("1"),
        st.text("0123456789", min_size=1, max_size=24).map(lambda digits: "0." + digits),
        st.sampled_from(["0.39999999999999999999", "0.40000000000000000001", "0.1000000000000000055511151231257827"]),
    )


@settings(deadline=None, max_examples=examples(150))
@given(text=fraction_texts(), users=st.integers(0, 10**9), source=st.sampled_from(SOURCES))
def test_the_prune_guard_allows_exactly_the_fraction_written_or_refuses_it_from_every_source(text, users, source):
    """`0.39999999999999999999` of 5 users allows 1; read through a float it became 0.4 and allowed 2."""
    from fractions import Fraction

    from faceit_etl.defs.resources import INEXACT_FRACTION
    from faceit_etl.postgres.load import prune_allowance

    value = read(source, "max_prune_fraction", text, yaml_text=f"max_prune_fraction: {text}\n")

    if isinstance(value, str):
        assert value.startswith("refused: ") and INEXACT_FRACTION in value, value
        assert names(value, source, "max_prune_fraction"), value
        assert Fraction(text) != Fraction(repr(float(text)))
    else:
        assert Fraction(repr(value)) == Fraction(text)  # the guard reads exactly what was written
        assert prune_allowance(users, value) == users * Fraction(text) // 1


def test_a_decimal_with_more_digits_than_a_float_keeps_is_refused_in_config_saying_why():
    """Handed on as text, the API refused it as "expected a number, not str" though a number was written."""
    refused = read("config", "max_prune_fraction", None, yaml_text="max_prune_fraction: 0.39999999999999999999\n")

    assert refused.startswith("refused: --config ") and refused.endswith(
        "settings.yaml: max_prune_fraction 0.39999999999999999999: more digits than can be kept exactly; "
        "give at most 15 significant digits"
    ), refused


@pytest.mark.parametrize(("yaml_text", "key", "line"), [
    ("target_schema: a\ntarget_schema: b\n", "target_schema", 2),
    ("truncate: false\nbatch_size: 5\ntruncate: true\n", "truncate", 3),
    ("resources:\n  migration_settings:\n    config:\n      force: false\n      force: true\n", "force", 5),
    ("resources: {}\nresources:\n  migration_settings: {config: {}}\n", "resources", 2),
])
def test_a_key_given_twice_in_config_is_refused_naming_it_never_the_last_taken(yaml_text, key, line):
    refused = read("config", key, None, yaml_text=yaml_text)

    assert refused.startswith("refused: --config ") and refused.endswith(
        f"settings.yaml: not valid YAML at line {line}, column {yaml_text.splitlines()[line - 1].index(key) + 1}: "
        f"key {key!r} given more than once, so which value is meant is ambiguous"
    ), refused



@pytest.mark.parametrize(("yaml_text", "beside"), [
    ("truncate: false\nresources:\n  migration_settings:\n    config:\n      truncate: true\n", "truncate"),
    ("batch_size: 5\nresources:\n  migration_settings:\n    config:\n      batch_size: 7\n", "batch_size"),
    ("source_path: a.json\nops: {}\nresources:\n  migration_settings:\n    config: {}\n", "ops, source_path"),
])
def test_a_setting_beside_the_run_config_layout_is_refused_never_dropped(yaml_text, beside):
    """One file, two layouts: the flat key was dropped unread, so the nested `truncate: true` won in silence."""
    refused = read("config", "truncate", None, yaml_text=yaml_text)

    assert refused.startswith("refused: --config ") and refused.endswith(
        f"settings.yaml: {beside} beside resources: give every setting in one layout, "
        "flat or under resources: migration_settings: config:"
    ), refused
