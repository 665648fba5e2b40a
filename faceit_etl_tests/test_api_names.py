"""Every name the README's Python API section gives a caller exists where it says: each function and class
is importable from `faceit_etl` (`from faceit_etl import rollback_candidate` failed while the section named
it), each method it lists for a class is that class's, async as it says. Names are read from the section,
so a name added there without its export fails here."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import faceit_etl
from faceit_etl import api

README = Path(__file__).resolve().parent.parent / "README.md"


def api_section() -> str:
    text = README.read_text(encoding="utf-8")
    return text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]


def readme_api_names(section: str) -> set[str]:
    """What the section names as the package's: `from faceit_etl import A, B` in its examples, a class (a
    capitalised code span, `DataMigration(...)` too) and a function written as a call (`status()`,
    `faceit_etl.migrate(...)`)."""
    names = set()
    for imported in re.findall(r"^from faceit_etl import (.+)$", section, flags=re.MULTILINE):
        names |= {name.strip() for name in imported.split(",")}
    for span in re.findall(r"`([^`\n]+)`", section):
        head = re.match(r"(?:faceit_etl\.)?([A-Za-z_]\w*)(\()?", span)
        if head and (head[2] or head[1][0].isupper()):  # `faceit_etl.errors`, a module, is neither
            names.add(head[1])
    return names


def methods_listed(section: str) -> dict[str, list[str]]:
    """`Class` (`a`, `b`; `c()` …): the methods the section lists for a class, in brackets after its name."""
    listed = {}
    for cls, inside in re.findall(r"`([A-Z]\w+)` \(((?:`[^`]*`|[^()`])*)\)", " ".join(section.split())):
        if not issubclass(getattr(faceit_etl, cls), BaseException):  # the errors' brackets name their subclasses
            listed[cls] = [re.match(r"\w+", span)[0] for span in re.findall(r"`([^`]+)`", inside)]
    return listed


def test_every_name_of_the_readmes_python_api_section_is_importable_from_faceit_etl():
    section = api_section()
    names = readme_api_names(section)
    classes = {name: getattr(faceit_etl, name) for name in names if hasattr(faceit_etl, name)
               and inspect.isclass(getattr(faceit_etl, name))}
    # A call that is no export of the package must be a method of one of its classes the section names.
    methods = {name for name in names if not hasattr(faceit_etl, name)
               and any(inspect.isfunction(getattr(cls, name, None)) for cls in classes.values())}

    assert {"rollback_candidate", "DataMigration", "MigrationResult", "migrate", "InvalidDatabaseUrl"} <= names
    assert methods == {"get_summary", "validate_json_structure"}
    for name in sorted(names - methods):
        assert name in faceit_etl.__all__, name
        exported = getattr(importlib.import_module("faceit_etl"), name, None)
        assert exported is not None, f"from faceit_etl import {name} fails"
        assert exported is getattr(api, name, None) or exported is getattr(faceit_etl.errors, name, None), name
        assert callable(exported), name
    assert inspect.signature(faceit_etl.rollback_candidate) == inspect.signature(api.rollback_candidate)


def test_the_methods_the_section_lists_for_each_class_are_its_own_and_async_as_it_says():
    listed = methods_listed(api_section())

    assert listed == {
        "DataMigration": ["migrate", "resume_migration", "rollback_migration", "validate", "status", "backup"],
        "DataValidator": ["load_json_data", "validate", "validate_json_structure"],
    }
    for cls, methods in listed.items():
        for method in methods:
            function = getattr(getattr(faceit_etl, cls), method)
            # "run each verb in a worker thread": a coroutine; validate_json_structure() judges what was loaded
            assert inspect.iscoroutinefunction(function) == (method != "validate_json_structure"), (cls, method)
