"""Every argument of the public API is judged when it arrives, by the CLI's rules for the flag of the same
meaning: `backup(output_dir=" ")` made a folder named by a space (the CLI refuses `--output-dir " "`), and
`DataMigration(max_concurrent=0)` was refused only by the first `migrate()`. The test enumerates the API
(the package's verbs, the classes' constructors and public methods) and drives each argument, and each
setting a verb takes, with values that are wrong for it: each is `SettingsInvalid` naming the argument,
raised by the call that receives it, with nothing written."""

from __future__ import annotations

import asyncio
import inspect
import math
import shutil
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import faceit_etl
from faceit_etl import api
from faceit_etl.defs.resources import MigrationSettings
from faceit_etl.errors import SettingsInvalid
from faceit_etl_tests.conftest import FLAT_SAMPLE
from faceit_etl_tests.test_api import here  # noqa: F401 (a fixture)
from faceit_etl_tests.test_cli import workdir  # noqa: F401 (a fixture)

BLANK = ["", " ", "\t\n"]
WRONG_FOR = {  # per type: values of another type, or of the type but meaning nothing (as the CLI refuses them)
    bool: ["yes", 1, None],
    int: [0, -1, True, 1.5, "5", 2**31],
    float: [-0.1, 1.5, math.nan, True, "0.1"],
    str: [*BLANK, 5],
}
SETTING_VALUES = {  # a setting's wrong values, by its field's type (None is "unset" for every setting)
    "max_rejects": ["", " ", "many", "-1", True, 1.5],
    "source_timezone": ["", " ", "Mars/Olympus", 5],
    "target_schema": ["", " ", 5],
    "max_concurrent": WRONG_FOR[int],
}
# The settings a verb takes (**settings) that have their own argument are given there: source_path is the
# verb's first argument, and database_url never goes among the settings.
SETTINGS = [name for name in MigrationSettings.model_fields if name != "source_path"] + ["max_concurrent"]


def _setting_values(name: str) -> list[Any]:
    if name in SETTING_VALUES:
        return SETTING_VALUES[name]
    [kind] = [h for h in typing.get_args(MigrationSettings.model_fields[name].annotation) if h is not type(None)]
    return [v for v in WRONG_FOR[kind] if v is not None]


def _wrong_values(hint: Any) -> list[Any]:
    """Values an argument of this annotation must refuse: blank text or paths, other types, counts below 1."""
    kinds = set(typing.get_args(hint)) or {hint}
    if typing.get_origin(hint) is Callable or any(typing.get_origin(k) is Callable for k in kinds):
        return [5, "print"]
    values: list[Any] = []
    if str in kinds or Path in kinds:
        values += BLANK + ([Path(" ")] if Path in kinds else []) + [5]
    elif bool in kinds:
        values += [v for v in WRONG_FOR[bool] if v is not None or type(None) not in kinds]
    elif int in kinds:
        values += WRONG_FOR[int]
    return values


def public_calls(folder: Path) -> dict[str, tuple[Callable, dict[str, Any]]]:
    """Each public callable of the API with the arguments it needs: the package's verbs (rollback_candidate,
    the CLI's question before a rollback, among them), the classes and their public methods."""
    data = folder / "data.json"
    shutil.copy(FLAT_SAMPLE, data)
    needs = {"path": data, "json_file_path": data}
    calls: dict[str, tuple[Callable, dict[str, Any]]] = {}
    for name in faceit_etl._API:
        target = getattr(api, name)
        if name == "MigrationResult":  # what a verb returns, never given
            continue
        calls[name] = target, needs
        if inspect.isclass(target):
            instance = target(data)
            for method, _ in inspect.getmembers(target, inspect.isfunction):
                if not method.startswith("_"):
                    calls[f"{name}.{method}"] = getattr(instance, method), needs
    return calls


def outcome(call: Callable, kwargs: dict[str, Any]) -> str:
    """What a call with these arguments did: refused (SettingsInvalid, its message) or accepted. A method
    that is a coroutine is awaited: its check is the await's first step, before any work."""
    try:
        answer = call(**kwargs)
        if inspect.iscoroutine(answer):
            asyncio.run(answer)
    except SettingsInvalid as exc:
        return f"SettingsInvalid: {exc}"
    except Exception as exc:  # noqa: BLE001 (reported, not raised: the test lists every case)
        return f"{type(exc).__name__}: {exc}"
    return "accepted"


def cases(call: Callable, needs: dict[str, Any]) -> list[tuple[str, Any, dict[str, Any]]]:
    """(argument, wrong value, the call's arguments) for each named argument and each setting it takes."""
    signature = inspect.signature(call)
    hints = typing.get_type_hints(call.__init__ if inspect.isclass(call) else call)
    required = {p: needs[p] for p, spec in signature.parameters.items()
                if spec.default is inspect.Parameter.empty and p in needs}
    found = []
    for parameter, spec in signature.parameters.items():
        if spec.kind is inspect.Parameter.VAR_KEYWORD:
            found += [(name, value, {**required, name: value}) for name in SETTINGS for value in _setting_values(name)]
        elif spec.kind is not inspect.Parameter.VAR_POSITIONAL:
            found += [(parameter, value, {**required, parameter: value}) for value in _wrong_values(hints[parameter])]
    return found


PUBLIC = [
    "migrate", "validate", "resume", "status", "rollback", "backup", "rollback_candidate",
    "DataMigration", "DataMigration.migrate", "DataMigration.resume_migration", "DataMigration.rollback_migration",
    "DataMigration.validate", "DataMigration.status", "DataMigration.backup",
    "DataValidator", "DataValidator.load_json_data", "DataValidator.validate_json_structure", "DataValidator.validate",
]


@pytest.mark.parametrize("name", PUBLIC)
def test_every_argument_of_the_public_api_is_refused_by_name_when_it_arrives(here, db, name):
    call, needs = public_calls(here)[name]
    before = sorted(str(p) for p in here.rglob("*"))

    wrong = [
        (argument, value, said)
        for argument, value, kwargs in cases(call, needs)
        if not ((said := outcome(call, kwargs)).startswith("SettingsInvalid: ") and argument in said)
    ]

    assert wrong == []
    assert sorted(str(p) for p in here.rglob("*")) == before  # nothing written: no backup, no run, no folder


def test_the_cases_cover_each_kind_of_argument(tmp_path):
    """The enumeration is no empty loop: the arguments the findings named are among its cases."""
    calls = public_calls(tmp_path)
    assert sorted(calls) == sorted(PUBLIC)  # the test above drives the whole public API
    driven = {(name, argument, repr(value)) for name, (call, needs) in calls.items()
              for argument, value, _ in cases(call, needs)}

    assert {("backup", "output_dir", "' '"), ("DataMigration", "max_concurrent", "0"),
            ("DataMigration", "batch_size", "0"), ("DataMigration", "batch_size", "-1"),
            ("DataMigration", "batch_size", "True"), ("DataMigration", "batch_size", "1.5"),
            ("DataValidator", "source_timezone", "' '"), ("rollback", "backup_path", "PosixPath(' ')"),
            ("migrate", "database_url", "''"), ("resume", "run_id", "'\\t\\n'")} <= driven
