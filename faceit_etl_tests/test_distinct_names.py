"""A name means one thing: no two domain modules define different things under the same public name
(two `describe` functions, two `REJECT_COLUMNS` lists once made a reader take one for the other)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "faceit_etl"
# The Dagster layer and the command line name their steps and verbs after the domain functions they call.
NOT_DOMAIN = {"defs", "cli"}
ENTRY_POINT = "main"  # `python -m faceit_etl.<tool>`


def public_definitions(path: Path) -> list[str]:
    names = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [target.id for target in node.targets if isinstance(target, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return [name for name in names if not name.startswith("_") and name != ENTRY_POINT]


def test_no_two_domain_modules_define_the_same_public_name():
    where = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in NOT_DOMAIN or path.name == "__init__.py":
            continue
        for name in public_definitions(path):
            where[name].append(str(relative))
    assert {name: paths for name, paths in where.items() if len(paths) > 1} == {}
