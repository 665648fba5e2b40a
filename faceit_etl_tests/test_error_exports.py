"""Every error class the README names for a caller's `except` is importable from `faceit_etl`, where it
says, and is the MigrationError subclass it says."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import faceit_etl
from faceit_etl import errors

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_hierarchy() -> list[str]:
    """The class names of the README's sentence that starts "Every error is a `MigrationError`"."""
    text = " ".join(README.read_text(encoding="utf-8").split())
    sentence = text.split("Every error is a `MigrationError`", 1)[1].split("keeping the domain's error", 1)[0]
    return ["MigrationError", *re.findall(r"`([A-Z][A-Za-z]+)`", sentence)]


def test_every_error_class_the_readme_names_is_importable_from_faceit_etl_as_a_migration_error():
    names = readme_hierarchy()

    assert len(names) == 14
    for name in names:
        exported = getattr(faceit_etl, name)  # what `from faceit_etl import <name>` gets
        assert exported is getattr(errors, name), name
        assert issubclass(exported, errors.MigrationError), name
        assert name in faceit_etl.__all__, name
    # and the README names every one of them: a class added to errors.py is documented or the test says so
    assert sorted(names) == sorted(
        name for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, errors.MigrationError)
    )
