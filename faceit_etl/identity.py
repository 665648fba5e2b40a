"""What a migration's frames depend on, as one hash: the file's bytes, the setting that changes
their meaning (the source time zone), and this code with the libraries that parse and judge.

Equal identities give equal frames, so a re-run may reuse an earlier run's validation outcome and
may recognise a target it has already loaded (see `validation/memo.py`, `postgres/fingerprint.py`).
Any change of code or library version gives a new identity: nothing is reused across them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import cache
from importlib.metadata import version
from pathlib import Path

from faceit_etl.backups import sha256_of

_LIBRARIES = ("numpy", "orjson", "pandas", "pandera", "pyarrow", "pysimdjson")
PACKAGE = Path(__file__).resolve().parent
# Dev tools: left out of the runtime image (.dockerignore) and of the code version, which they do
# not change, so the image and a checkout of the same code agree on it.
DEV_TOOLS = ("benchmark.py", "generate.py")


@cache
def code_version(package: Path = PACKAGE) -> str:
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        if path.parent == package and path.name in DEV_TOOLS:
            continue
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    for library in _LIBRARIES:
        digest.update(f"{library}=={version(library)}\0".encode())
    return digest.hexdigest()


def input_identity(source_sha256: str | None, source_timezone: str) -> str:
    if not source_sha256:  # never one identity for unknown contents: that would reuse a stranger's
        raise ValueError("the source's sha256 is unknown, so the run's input cannot be identified")
    return hashlib.sha256(f"{source_sha256}\0{source_timezone}\0{code_version()}".encode()).hexdigest()


@dataclass(frozen=True)
class FileLook:
    """The bot's file as one look found it: its content's sha256 and the stat that vouches for it."""

    sha256: str
    size_bytes: int
    mtime_ns: int
    ctime_ns: int
    device: int
    inode: int

    def as_dict(self) -> dict:
        return asdict(self)


def look_at_file(path: str | Path, *earlier: Mapping | None) -> tuple[FileLook, bool]:
    """The file's look, and whether its bytes were hashed. When the file is the same one, of the same
    size and mtime as at one of the `earlier` looks (any that hashed it: the last observation, the
    sensor's), that look's sha256 is reused: an untouched 700 MB file is not read again. Any difference (a touch, a rewrite, a file moved into place, `cp -p` restoring an
    older mtime) hashes the bytes, so equal content is recognised by its hash. The inode's change time
    is part of the stat because no writer can set it: a rewrite of the same length whose mtime was put
    back (`touch -d`, `rsync -t --inplace`, one-second timestamps) still moves it."""
    stat = Path(path).stat()
    now = {"size_bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns,
           "device": stat.st_dev, "inode": stat.st_ino}
    for last in earlier:
        if last and last.get("sha256") and all(last.get(name) == value for name, value in now.items()):
            return FileLook(sha256=last["sha256"], **now), False
    return FileLook(sha256=sha256_of(path), **now), True
