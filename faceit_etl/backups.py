"""Backups taken before anything is loaded: one private folder per run under the backup folder.

The source file is copied with its sha256; every later step reads that copy, so a bot rewriting
its file mid-run cannot give the pipeline a mix of two versions. Backups hold personal data:
folders are 0700, files 0600.

A run of content a kept backup already holds (same sha256: a re-run of an unchanged file) links
that copy into its folder instead of copying it again, so cron, sensor and schedule re-runs do not
fill the disk. Copies are never written after they are made (writers replace a file, never write
into it), so a link is as good as a copy; deleting one run's folder leaves the others' links whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import orjson

CHUNK = 1 << 20
SOURCE_COPY = "source.json"
MANIFEST = "manifest.json"
REJECTS_FILE = "rejects.jsonl"  # every rejected entry of the run, with its reason
# The manifest's `no_snapshot`: why a run's load took no snapshot of the tables (a refused rollback says it).
NO_SNAPSHOT, NO_SNAPSHOT_DRY_RUN, NO_SNAPSHOT_OFF = "no_snapshot", "dry run", "backup_tables off"
_IDENTITY = ("st_dev", "st_ino", "st_size", "st_mtime_ns", "st_ctime_ns")  # a file rewritten or replaced


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


MANUAL = "manual-"


def manual_backup_name() -> str:
    """A folder name of its own for each manual backup: readable time, then a random part, since
    two backups started in the same second (or microsecond) must not share a folder."""
    return f"{MANUAL}{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"


# A manual backup being written: `.partial-<name>` beside the others, renamed to <name> once whole. Its dot
# keeps it out of `ls` and of every look for backups (a folder named by a run or `manual-…`).
PARTIAL = ".partial-"


@contextmanager
def whole_or_none(root: str | Path, name: str) -> Iterator[Path]:
    """The folder to write the backup `name` in: it appears under `root` as `name` only whole, renamed there at the
    end (in the same folder: atomic); anything that stops it first (Ctrl-C included) removes it."""
    partial = Path(root).resolve() / f"{PARTIAL}{name}"
    try:
        yield partial
        partial.rename(partial.with_name(name))
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def is_manual_backup(manifest: dict) -> bool:
    """A `backup`'s folder: no run made it, its `run_id` is only the folder's name."""
    return "source" in manifest and manifest["run_id"].startswith(MANUAL)


def private_folder(path: Path) -> Path:
    """`path` as a 0700 folder; a backup root made here is 0700 too (an existing one is left as is)."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # another run may make it meanwhile
    path.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)
    return path


@contextmanager
def private_writer(path: Path, *, durable: bool = True) -> Iterator[BinaryIO]:
    """A file readable by its owner only, written atomically: a temp file of this writer's own (two
    runs may write the same path at once, as two runs of one file do its validated value) renamed
    into place; on failure the temp file is removed and `path` is left as it was. `durable` syncs it
    to disk first (a backup must survive a crash; a step value can be made again)."""
    descriptor, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # 0600
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def newest_first(paths: Iterable[Path]) -> list[Path]:
    """`paths` by modification time, newest first; one that another run deleted meanwhile is left out."""
    dated = []
    for path in paths:
        try:
            dated.append((path.stat().st_mtime_ns, path))
        except FileNotFoundError:
            continue
    return [path for _, path in sorted(dated, reverse=True)]


def write_private(path: Path, data: bytes) -> None:
    with private_writer(path) as handle:
        handle.write(data)


def backup_source(
    source_path: str | Path, backup_dir: str | Path, run_id: str, *, observed_sha256: str | None = None,
    observed_look: Mapping | None = None, folder: Path | None = None,
) -> SourceSnapshot:
    """Copy the source into the run's folder with its sha256, or raise BackupError. With
    `observed_sha256` (the content a run looked at before), the copy must be of those very bytes. A kept
    copy of them linked, and the file still as `observed_look` found it (the stat `identity.look_at_file`
    trusts: size, mtime, change time, inode), the file is not read at all (3 s of a re-run at 1M users).
    `folder`: where to write it, when not the run's own folder yet (a manual backup's, see whole_or_none)."""
    source = Path(source_path).resolve()
    descriptor = _open_source(source)
    folder = folder or run_folder(backup_dir, run_id)
    copy = folder / SOURCE_COPY
    before = _regular_file_stat(source, descriptor)
    linked = observed_sha256 is not None and _link_kept_copy(backup_dir, run_id, observed_sha256, before.st_size, copy)
    if linked and _as_looked(before, observed_look):
        os.close(descriptor)
        sha256 = observed_sha256
    else:
        sha256 = _copy_hashing(descriptor, folder, copy, linked=linked)
    after = _trusted_copy_stat(source, copy, before, sha256, observed_sha256)
    snapshot = SourceSnapshot(str(source), str(copy), sha256, after.st_size, str(folder))
    manifest = {
        "run_id": run_id,
        "taken_at": datetime.now(UTC).isoformat(),
        "source": {"path": snapshot.original, "sha256": snapshot.sha256, "size_bytes": snapshot.size_bytes,
                   "linked": linked},
    }
    write_private(folder / MANIFEST, json.dumps(manifest, indent=2).encode())
    return snapshot


def _open_source(source: Path) -> int:
    try:
        # O_NONBLOCK: opening a named pipe would otherwise wait for a writer, before it is refused
        return os.open(source, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise BackupError(f"{source}: source file not found") from None
    except OSError as exc:
        raise BackupError(f"{source}: cannot be read: {exc.strerror or exc}. Nothing was loaded.") from None


def _regular_file_stat(source: Path, descriptor: int) -> os.stat_result:
    """The open source's stat, made blocking again for the copy; anything but a regular file is
    closed and refused."""
    before = os.fstat(descriptor)
    if not stat.S_ISREG(before.st_mode):  # a pipe or device cannot be read twice and compared
        os.close(descriptor)
        raise BackupError(
            f"{source}: is {_file_kind(before.st_mode)}, not a regular file; expected the bot's "
            "JSON data file. Nothing was loaded."
        )
    os.set_blocking(descriptor, True)
    return before


def _as_looked(now: os.stat_result, look: Mapping | None) -> bool:
    """Whether the file is the one a look hashed, by the stat that look vouched for its sha256 with."""
    return bool(look) and all(
        look.get(name) == value
        for name, value in (("size_bytes", now.st_size), ("mtime_ns", now.st_mtime_ns), ("ctime_ns", now.st_ctime_ns),
                            ("device", now.st_dev), ("inode", now.st_ino))
    )


def _link_kept_copy(backup_dir: str | Path, run_id: str, sha256: str, size: int, copy: Path) -> bool:
    """Link the newest kept copy of these bytes (its manifest's sha256, its size) as `copy`, once the
    copy is read and still hashes as its manifest says: a damaged one is never linked. False when there
    is none, or linking fails (another file system, a file system without links: EXDEV, EPERM)."""
    root, tried = Path(backup_dir).resolve(), set()  # links of one copy: read it once
    for manifest in newest_first(root.glob(f"*/{MANIFEST}")):
        kept = manifest.parent / SOURCE_COPY
        if manifest.parent.name == run_id or manifest.parent.name.startswith(PARTIAL) or _manifest_sha256(manifest) != sha256:
            continue
        try:
            found = kept.stat()
            if found.st_size != size or (found.st_dev, found.st_ino) in tried:
                continue
            tried.add((found.st_dev, found.st_ino))
            if sha256_of(kept) != sha256:
                continue
            private_folder(copy.parent)
            os.link(kept, copy)
        except OSError:
            continue
        return True
    return False


def _manifest_sha256(path: Path) -> str | None:
    try:
        return json.loads(path.read_bytes()).get("source", {}).get("sha256")
    except (OSError, ValueError, AttributeError):  # gone meanwhile, half written by hand, not ours
        return None


def _copy_hashing(descriptor: int, folder: Path, copy: Path, *, linked: bool) -> str:
    """Copy the open source into the run's private folder, hashing each block as it is copied; the sha256.
    When `copy` is `linked` to a kept copy already, the source is only read and hashed: the caller
    compares both."""
    digest = hashlib.sha256()
    with os.fdopen(descriptor, "rb") as reader:
        try:
            private_folder(folder)
            if linked:
                while block := reader.read(CHUNK):
                    digest.update(block)
                return digest.hexdigest()
            with private_writer(copy) as writer:
                while block := reader.read(CHUNK):
                    digest.update(block)
                    writer.write(block)
        except OSError as exc:
            raise BackupError(
                f"cannot write the backup to {folder}: {exc.strerror or exc}. Nothing was loaded."
            ) from None
    return digest.hexdigest()


def _trusted_copy_stat(source: Path, copy: Path, before: os.stat_result, sha256: str,
                       observed_sha256: str | None) -> os.stat_result:
    """The source's stat after the copy, when the copy can be trusted; otherwise the copy is removed
    and BackupError raised.

    The copy is trusted only if the file is the same before and after it: same inode, size, mtime
    and change time (which, unlike the mtime, no tool can set back), and the same content. A copy
    whose sha256 is `observed_sha256` holds the very bytes the run looked at (a mix of two versions
    would hash otherwise), so the file is read once, hashed as it is copied. Without it the file is
    read and hashed a second time, which catches what the stat cannot: a rewrite of the same size
    within the mtime's granularity, or by a tool that restores the mtime (rsync -t, cp -p).
    """
    after = _unchanged_stat(source, before, None if observed_sha256 == sha256 else sha256)
    if after is None:
        copy.unlink(missing_ok=True)  # a mix of two versions is no backup
        raise BackupError(
            f"{source}: the file changed while it was being copied (it was written to meanwhile); "
            "nothing was loaded. Run again."
        )
    if observed_sha256 is not None and observed_sha256 != sha256:
        copy.unlink()
        raise BackupError(
            f"{source}: the file changed between this run's look at it and its backup (it was "
            "written to meanwhile); nothing was loaded. Run again."
        )
    return after


def _unchanged_stat(source: Path, before: os.stat_result, copied_sha256: str | None) -> os.stat_result | None:
    """The file's stat if the path still names the file that was copied, with the same inode, size,
    mtime, change time and content (read again and hashed unless `copied_sha256` is None: the copy
    is already known to hold the bytes looked at), else None."""

    def same(now: os.stat_result) -> bool:
        return all(getattr(now, key) == getattr(before, key) for key in _IDENTITY)

    try:
        descriptor = os.open(source, os.O_RDONLY | os.O_NONBLOCK)  # no wait if a pipe took its place
    except OSError:  # removed meanwhile
        return None
    try:
        if not same(os.fstat(descriptor)):
            return None
        if copied_sha256 is None:
            after = os.stat(source)
            return after if same(after) else None
        digest = hashlib.sha256()
        while block := os.read(descriptor, CHUNK):
            digest.update(block)
        after = os.stat(source)
    except OSError:
        return None
    finally:
        os.close(descriptor)
    return after if same(after) and digest.hexdigest() == copied_sha256 else None


def _file_kind(mode: int) -> str:
    kinds = {
        stat.S_IFDIR: "a directory",
        stat.S_IFIFO: "a named pipe (FIFO)",
        stat.S_IFCHR: "a character device",
        stat.S_IFBLK: "a block device",
        stat.S_IFSOCK: "a socket",
    }
    return kinds.get(stat.S_IFMT(mode), "an unknown kind of file")


def start_manifest(folder: Path, run_id: str, root_run_id: str) -> None:
    """A run that did not copy the source itself (a re-execution from failure reads the copy an
    earlier run of its family made) still gets its own folder for its table snapshot."""
    private_folder(folder)
    manifest = {"run_id": run_id, "taken_at": datetime.now(UTC).isoformat(), "root_run_id": root_run_id}
    write_private(folder / MANIFEST, json.dumps(manifest, indent=2).encode())


def write_json_lines(path: Path, records: list[dict]) -> Path:
    """One JSON document per line, readable by the owner only (rejects hold personal data)."""
    write_private(path, b"".join(orjson.dumps(record) + b"\n" for record in records))
    return path


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise BackupError(f"{folder}: no {MANIFEST} here; not a faceit-etl backup folder") from None
    except ValueError as exc:  # not JSON, or not UTF-8: the message says where, quoting no text
        raise BackupError(f"{path}: damaged, not a manifest's JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise BackupError(f"{path}: damaged, not a manifest's JSON (a {type(manifest).__name__}, not an object)")
    return manifest


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
