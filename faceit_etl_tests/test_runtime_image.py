"""The runtime image holds the pipeline, not the dev tools (test data generator, benchmark)."""

from __future__ import annotations

import ast
import shutil
from fnmatch import fnmatch
from pathlib import Path

from faceit_etl.identity import DEV_TOOLS, code_version

ROOT = Path(__file__).resolve().parent.parent


def build_context() -> set[str]:
    """The files `docker build` sends, by .dockerignore's rules: the last pattern that matches a path
    (or a folder above it) decides, `!` letting it back in."""
    patterns = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    files = [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*")
             if p.is_file() and not {".git", ".venv"} & set(p.relative_to(ROOT).parts)]
    sent = set()
    for name in files:
        included = True
        for pattern in patterns:
            negated, rule = pattern.startswith("!"), pattern.lstrip("!")
            if any(fnmatch(prefix, rule) for prefix in _self_and_parents(name)):
                included = negated
        if included:
            sent.add(name)
    return sent


def _self_and_parents(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def test_the_dev_tools_are_not_sent_to_the_image_build_and_nothing_sent_imports_them():
    sent = build_context()
    assert {f"faceit_etl/{tool}" for tool in DEV_TOOLS} & sent == set()
    assert {"faceit_etl/definitions.py", "faceit_etl/cli/main.py", "faceit_etl/postgres/load.py", "pyproject.toml"} <= sent
    dev_modules = {f"faceit_etl.{Path(tool).stem}" for tool in DEV_TOOLS}
    imports = {
        (name, module)
        for name in sent if name.endswith(".py")
        for node in ast.walk(ast.parse((ROOT / name).read_text()))
        for module in ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [node.module] if isinstance(node, ast.ImportFrom) else [])
        if module in dev_modules
    }
    assert imports == set()


def test_the_code_version_ignores_the_dev_tools_and_follows_the_pipelines_code(tmp_path):
    package = Path(shutil.copytree(ROOT / "faceit_etl", tmp_path / "faceit_etl",
                                   ignore=shutil.ignore_patterns("__pycache__")))
    before = code_version(package)
    for tool in DEV_TOOLS:
        (package / tool).write_text((package / tool).read_text() + "\n# changed\n")
    assert code_version.__wrapped__(package) == before
    (package / "mapping.py").write_text((package / "mapping.py").read_text() + "\n# changed\n")
    assert code_version.__wrapped__(package) != before
