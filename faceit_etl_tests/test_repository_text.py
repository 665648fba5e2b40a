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


ASSIGNED = re.compile(r"^([A-Z][A-Z0-9_]*)=", re.MULTILINE)
# Where a variable is read: Python's environment, the instance files' `{env: NAME}`, compose's `${NAME}`
# and its service `environment:` keys, a Caddyfile's `{$NAME}`, the Makefile's and Dockerfile's `$(NAME)`/`$NAME`.
READERS = (r'environ(?:\.get)?\(\s*"{name}"|environ\["{name}"\]|EnvVar\("{name}"\)|"{name}"', r"\{{env: {name}\}}",
           r"\$\{{{name}[}}:?-]", r"\{{\${name}\}}", r"\$\(?{name}\b")


def test_every_variable_of_the_env_example_is_read_somewhere():
    """`.env.example` promises what each variable does: one that no file reads would do nothing, silently."""
    named = ASSIGNED.findall((ROOT / ".env.example").read_text())
    readers = [path for path in sources() if path.suffix != ".md" and "faceit_etl_tests" not in path.parts]
    texts = [path.read_text(errors="replace") for path in readers]
    unread = [name for name in named
              if not any(re.search(pattern.format(name=name), text) for pattern in READERS for text in texts)]
    assert len(named) > 20 and unread == []


def test_the_readmes_layout_names_every_module_of_the_package():
    """The Layout section is where a reader looks for a module: one it leaves out cannot be found in one hop."""
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"[a-z_]+", layout))
    package = ROOT / "faceit_etl"
    modules = {path.stem for path in package.rglob("*.py") if path.stem not in {"__init__", "__main__"}}
    folders = {path.name for path in package.iterdir() if path.is_dir() and path.name != "__pycache__"}
    assert sorted((modules | folders) - named) == []
