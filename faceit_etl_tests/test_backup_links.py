"""Re-runs of an unchanged file under cron, a sensor or a schedule keep no second copy of it: a
backup of content a kept backup holds is a hard link to that copy, so `backups/` grows by the
file's size only when its content changes."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import dagster as dg
import pytest

from faceit_etl import backups
from faceit_etl.backups import backup_source
from faceit_etl.generate import write_data_file
from faceit_etl.source import reader
from faceit_etl_tests.conftest import make_resources, write_json
from faceit_etl_tests.test_hash_once import bytes_read
from faceit_etl_tests.test_pipeline import run
from faceit_etl_tests.test_cli import faceit_etl, instance_at, tables_digest, workdir  # noqa: F401 (a fixture)
from faceit_etl_tests.test_resume import ALTER, failed_on_a_32_bit_column, migrate_runs


def disk_bytes(folder: Path) -> int:
    """What the files under `folder` take on disk, each inode counted once (as du counts it)."""
    inodes = {}
    for path in folder.rglob("*"):
        if path.is_file():
            stat = path.stat()
            inodes[(stat.st_dev, stat.st_ino)] = stat.st_blocks * 512
    return sum(inodes.values())


def source_copies(backup_dir: Path, run_ids: list[str]) -> list[os.stat_result]:
    return [(backup_dir / run_id / "source.json").stat() for run_id in run_ids]


def linked(backup_dir: Path, run_id: str) -> bool:
    return json.loads((backup_dir / run_id / "manifest.json").read_text())["source"]["linked"]


def test_three_backups_of_unchanged_content_keep_one_copy_and_a_change_gets_its_own(tmp_path):
    source = tmp_path / "data.json"
    source.write_bytes(os.urandom(4 << 20))
    backup_dir = tmp_path / "backups"
    sha256 = hashlib.sha256(source.read_bytes()).hexdigest()

    for run_id in ("one", "two", "three"):
        backup_source(source, backup_dir, run_id, observed_sha256=sha256)

    one, two, three = source_copies(backup_dir, ["one", "two", "three"])
    assert one.st_ino == two.st_ino == three.st_ino and three.st_nlink == 3
    assert [linked(backup_dir, r) for r in ("one", "two", "three")] == [False, True, True]
    assert disk_bytes(backup_dir) < 1.1 * (4 << 20)  # one copy's worth, plus three manifests
    assert (backup_dir / "three" / "source.json").read_bytes() == source.read_bytes()

    source.write_bytes(os.urandom(4 << 20))
    changed = backup_source(source, backup_dir, "four", observed_sha256=hashlib.sha256(source.read_bytes()).hexdigest())
    assert source_copies(backup_dir, ["four"])[0].st_nlink == 1
    assert Path(changed.copy).read_bytes() == source.read_bytes() and not linked(backup_dir, "four")

    # Deleting the folder that made the copy leaves the runs linked to it whole.
    for path in (backup_dir / "one").iterdir():
        path.unlink()
    (backup_dir / "one").rmdir()
    assert hashlib.sha256((backup_dir / "three" / "source.json").read_bytes()).hexdigest() == sha256

    # Linking the looked-at bytes still reads the file: if it holds other bytes now (same size), the run
    # stops as a copying run does, and leaves no link behind.
    source.write_bytes(os.urandom(4 << 20))
    with pytest.raises(backups.BackupError) as refused:
        backup_source(source, backup_dir, "late", observed_sha256=sha256)
    assert str(refused.value) == (f"{source}: the file changed between this run's look at it and its backup (it was "
                                  "written to meanwhile); nothing was loaded. Run again.")
    assert not (backup_dir / "late" / "source.json").exists()
    assert (backup_dir / "three" / "source.json").stat().st_nlink == 2


def test_a_damaged_kept_copy_is_never_linked_and_is_read_once(tmp_path):
    """A kept copy that no longer hashes as its manifest says (a flipped byte, the same size) is not
    linked: the run copies the file afresh, having read the damaged copy once, not once per link."""
    source = tmp_path / "data.json"
    source.write_bytes(os.urandom(4 << 20))
    sha256 = hashlib.sha256(source.read_bytes()).hexdigest()
    kept = backup_source(source, tmp_path / "backups", "kept", observed_sha256=sha256)
    backup_source(source, tmp_path / "backups", "linked", observed_sha256=sha256)
    with Path(kept.copy).open("r+b") as damage:  # in place: both links see it
        damage.seek(100)
        damage.write(b"\0" if source.read_bytes()[100:101] != b"\0" else b"\1")

    before = bytes_read()
    fresh = backup_source(source, tmp_path / "backups", "fresh", observed_sha256=sha256)
    read = bytes_read() - before

    assert Path(fresh.copy).stat().st_ino != Path(kept.copy).stat().st_ino
    assert Path(fresh.copy).read_bytes() == source.read_bytes() and not linked(tmp_path / "backups", "fresh")
    assert read < 2.1 * (4 << 20)  # the damaged copy once, the file once


def test_a_link_that_fails_falls_back_to_a_copy(tmp_path, monkeypatch):
    """Backups on a file system without links (or across two): EXDEV, EPERM. The run copies."""
    source = write_json(tmp_path / "data.json", {"users": [{"user_id": 7}]})
    sha256 = hashlib.sha256(source.read_bytes()).hexdigest()
    backup_source(source, tmp_path / "backups", "kept", observed_sha256=sha256)

    def refused(*_):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(backups.os, "link", refused)
    copied = backup_source(source, tmp_path / "backups", "copied", observed_sha256=sha256)

    assert Path(copied.copy).stat().st_nlink == 1 and Path(copied.copy).read_bytes() == source.read_bytes()
    assert not linked(tmp_path / "backups", "copied")


def test_cli_re_runs_link_their_backup_and_rollback_and_resume_work_from_linked_ones(workdir, database_url, db):
    """Runs of the CLI observe the file first: an unchanged re-run links the backup of the run before.
    A failed run whose backup is a link is resumed, and the resumed migration rolled back, as any."""
    source, users = failed_on_a_32_bit_column(workdir, database_url, db)
    again = faceit_etl(workdir, database_url, "migrate", str(source))  # the same file fails the same way
    assert again.returncode == 1, again.stdout + again.stderr
    backup_dir = workdir / "backups"
    with instance_at(workdir) as instance:
        failed_again, failed_first = migrate_runs(instance)[:2]
    copies = source_copies(backup_dir, [failed_first.run_id, failed_again.run_id])
    assert copies[0].st_ino == copies[1].st_ino and copies[1].st_nlink == 2
    assert linked(backup_dir, failed_again.run_id) and not linked(backup_dir, failed_first.run_id)
    db.execute(ALTER)
    before = tables_digest(db)

    done = faceit_etl(workdir, database_url, "migrate", "--resume")

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"resuming run {failed_again.run_id} from its failed step" in done.stdout
    rows = db.execute("SELECT user_id, faceit_nickname FROM users ORDER BY user_id").fetchall()
    assert rows == sorted((u["user_id"], u["faceit_nickname"]) for u in users)

    undone = faceit_etl(workdir, database_url, "rollback", "--confirm")

    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert tables_digest(db) == before
    with instance_at(workdir) as instance:
        assert migrate_runs(instance)[0].status == dg.DagsterRunStatus.SUCCESS


def test_a_run_whose_backup_another_run_links_to_while_it_is_read_loads_every_user(tmp_path, database_url, db, monkeypatch):
    """Two runs of one file at once: the second links the first's copy while the first reads it in
    pieces, which moves the copy's change time but not its bytes."""
    source = write_data_file(tmp_path / "data.json", 15_000, seed=3)  # more than one 8 MiB piece
    found = reader.find_pieces

    def another_run_links_the_copy(raw, piece_bytes, begin):
        pieces = found(raw, piece_bytes, begin)
        (copy,) = (tmp_path / "backups").glob(f"*/{backups.SOURCE_COPY}")
        os.link(copy, tmp_path / "another-runs-copy.json")
        return pieces

    monkeypatch.setattr(reader, "find_pieces", another_run_links_the_copy)
    result = run(make_resources(database_url, source, tmp_path))

    assert result.success
    assert (tmp_path / "another-runs-copy.json").stat().st_nlink == 2
    users = json.loads(source.read_bytes())["users"]
    assert db.execute("SELECT count(*), sum(user_id) FROM users").fetchone() == (15_000, sum(u["user_id"] for u in users))
