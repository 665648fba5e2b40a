"""Backups taken before anything is loaded: one private folder per run under the backup folder.

The source file is copied with its sha256; every later step reads that copy, so a bot rewriting
its file mid-run cannot give the pipeline a mix of two versions. Backups hold personal data:
folders are 0700, files 0600.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import orjson

CHUNK = 1 << 20
SOURCE_COPY = "source.json"
MANIFEST = "manifest.json"


class BackupError(RuntimeError):
    """The backup could not be made; the run stops before anything is loaded."""


@dataclass(frozen=True)
class SourceSnapshot:
    original: str
    copy: str
    sha256: str
    size_bytes: int
    folder: str


def run_folder(backup_dir: str | Path, run_id: str) -> Path:
    return Path(backup_dir).resolve() / run_id


def private_folder(path: Path) -> Path:
    """`path` as a 0700 folder; a backup root made here is 0700 too (an existing one is left as is)."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)
    return path


@contextmanager
def private_writer(path: Path) -> Iterator[BinaryIO]:
    """A file readable by its owner only, written atomically (a temp file renamed into place)."""
    temp = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
    temp.replace(path)


def write_private(path: Path, data: bytes) -> None:
    with private_writer(path) as handle:
        handle.write(data)


def backup_source(source_path: str | Path, backup_dir: str | Path, run_id: str) -> SourceSnapshot:
    source = Path(source_path).resolve()
    try:
        before = source.stat()
    except FileNotFoundError:
        raise BackupError(f"{source}: source file not found") from None
    folder = run_folder(backup_dir, run_id)
    copy = folder / SOURCE_COPY
    digest = hashlib.sha256()
    try:
        private_folder(folder)
        with source.open("rb") as reader, private_writer(copy) as writer:
            while block := reader.read(CHUNK):
                digest.update(block)
                writer.write(block)
    except OSError as exc:
        raise BackupError(
            f"cannot write the backup to {folder}: {exc.strerror or exc}. Nothing was loaded."
        ) from None
    after = source.stat()
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise BackupError(f"{source}: the file changed while it was being copied; run again")
    snapshot = SourceSnapshot(str(source), str(copy), digest.hexdigest(), after.st_size, str(folder))
    manifest = {
        "run_id": run_id,
        "taken_at": datetime.now(UTC).isoformat(),
        "source": {"path": snapshot.original, "sha256": snapshot.sha256, "size_bytes": snapshot.size_bytes},
    }
    write_private(folder / MANIFEST, json.dumps(manifest, indent=2).encode())
    return snapshot


def write_json_lines(path: Path, records: list[dict]) -> Path:
    """One JSON document per line, readable by the owner only (rejects hold personal data)."""
    write_private(path, b"".join(orjson.dumps(record) + b"\n" for record in records))
    return path


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BackupError(f"{folder}: no {MANIFEST} here; not a faceit-etl backup folder") from None


def update_manifest(folder: str | Path, **sections) -> dict:
    manifest = read_manifest(folder) | sections
    write_private(Path(folder) / MANIFEST, json.dumps(manifest, indent=2).encode())
    return manifest


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as reader:
        while block := reader.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()
