"""The repository speaks for itself: no file refers to a document that is not in it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A section of the project's brief ("BRIEF §4") or the original implementation called "the seed".
OUTSIDE = re.compile(r"\bBRIEF\b|\bthe seed\b|\bseed's\b|\bseeds_", re.IGNORECASE)


def test_no_file_refers_to_a_document_outside_the_repository():
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sources()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert found == []


def sources() -> list[Path]:
    """The project's own text files: the package, its tests, the build, the stack and the README."""
    top = [ROOT / name for name in ("README.md", "Makefile", "Dockerfile", "pyproject.toml", "constraints.txt",
                                    "docker-compose.yml", "dagster.yaml", "workspace.yaml", ".dockerignore")]
    nested = [path for folder in ("faceit_etl", "faceit_etl_tests", "docker", ".ci") for path in (ROOT / folder).rglob("*")
              if path.is_file() and "__pycache__" not in path.parts and path.name != Path(__file__).name]
    return [path for path in (*top, *nested) if path.is_file()]
