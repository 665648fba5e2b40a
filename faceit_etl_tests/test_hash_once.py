"""Each byte of the bot's file is hashed once where it can be: a backup of the content the run
looked at reads the file once, copying and hashing in the same pass."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import dagster as dg
import pytest

from faceit_etl.backups import BackupError, backup_source
from faceit_etl.definitions import defs
from faceit_etl.defs.resources import MigrationSettings
from faceit_etl.identity import look_at_file
from faceit_etl_tests.conftest import write_json
from faceit_etl_tests.test_automation import evaluate, run_request
from faceit_etl_tests.test_faults import CHANGED, caught_mid_copy, two_versions


def bytes_read() -> int:
    """What this process has read through read() so far (the kernel's count)."""
    return int(dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())["rchar"])


def test_a_backup_of_the_content_looked_at_reads_the_file_once(tmp_path):
    content = bytes(range(256)) * (16 << 12)  # 16 MiB
    source = tmp_path / "data.json"
    source.write_bytes(content)
    observed = hashlib.sha256(content).hexdigest()

    before = bytes_read()
    unseen = backup_source(source, tmp_path / "backups", "unseen")
    read_unseen = bytes_read() - before
    before = bytes_read()  # a folder of its own: with the copy above kept there, it would be linked
    seen = backup_source(source, tmp_path / "other-backups", "seen", observed_sha256=observed)
    read_seen = bytes_read() - before

    assert read_unseen >= 2 * len(content)  # no look to rely on: read again to prove it unchanged
    assert len(content) <= read_seen < 1.1 * len(content)
    assert seen.sha256 == unseen.sha256 == observed
    assert Path(seen.copy).read_bytes() == content


def kept_and_looked_at(tmp_path: Path, content: bytes) -> tuple[Path, dict]:
    """The file, backed up once by an earlier run (its copy kept), and a look at it now."""
    source = tmp_path / "data.json"
    source.write_bytes(content)
    backup_source(source, tmp_path / "backups", "earlier")
    return source, look_at_file(source)[0].as_dict()


def test_a_re_run_of_the_file_as_its_look_found_it_links_the_kept_copy_without_reading_the_file(tmp_path):
    content = bytes(range(256)) * (16 << 12)  # 16 MiB
    source, look = kept_and_looked_at(tmp_path, content)

    before = bytes_read()
    again = backup_source(source, tmp_path / "backups", "again", observed_sha256=look["sha256"], observed_look=look)
    read = bytes_read() - before

    assert len(content) <= read < 1.1 * len(content)  # the kept copy, hashed before it is linked; not the file
    assert again.sha256 == hashlib.sha256(content).hexdigest()
    assert Path(again.copy).read_bytes() == content
    assert Path(again.copy).stat().st_ino == (tmp_path / "backups" / "earlier" / "source.json").stat().st_ino


def test_a_file_rewritten_at_the_same_size_and_mtime_after_its_look_is_read_and_refused(tmp_path):
    """The look's stat no longer holds (the change time moved): the file is read, and its other bytes
    refuse the backup, as any change between a look and its backup does."""
    content = b'{"users": [{"user_id": 1}]}'
    source, look = kept_and_looked_at(tmp_path, content)
    stat = source.stat()
    source.write_bytes(content.replace(b"1", b"2"))
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (source.stat().st_size, source.stat().st_mtime_ns) == (look["size_bytes"], look["mtime_ns"])

    with pytest.raises(BackupError) as refused:
        backup_source(source, tmp_path / "backups", "again", observed_sha256=look["sha256"], observed_look=look)

    assert str(refused.value) == (
        f"{source}: the file changed between this run's look at it and its backup (it was written to meanwhile); "
        "nothing was loaded. Run again."
    )
    assert not (tmp_path / "backups" / "again" / "source.json").exists()


@pytest.mark.db  # starts a process
def test_a_file_rewritten_during_a_backup_of_the_content_looked_at_is_refused(tmp_path):
    """The copy of one read is trusted only when it hashes as the look did: a mix of two versions
    never does, and is refused as before."""
    size = 32 << 20
    observed = hashlib.sha256(two_versions(size)[0]).hexdigest()  # the look saw the first version

    def command(source, attempt):
        script = (
            "import sys\n"
            "from faceit_etl.backups import BackupError, backup_source\n"
            "try:\n"
            "    backup_source(sys.argv[1], sys.argv[2], sys.argv[3], observed_sha256=sys.argv[4])\n"
            "except BackupError as exc:\n"
            "    print(f'BackupError: {exc}')\n"
            "    sys.exit(3)\n"
        )
        return [sys.executable, "-c", script, str(source), str(tmp_path / "backups"), f"run-{attempt}", observed]

    victim, source, attempt, output, second = caught_mid_copy(tmp_path, command, size=size, attempts=5, timeout=120)

    assert (victim.returncode, output) == (3, f"BackupError: {source}: {CHANGED}\n")
    assert not (tmp_path / "backups" / f"run-{attempt}" / "source.json").exists()


def test_new_content_is_hashed_once_between_the_sensor_and_the_run_it_requests(tmp_path, monkeypatch, database_url, db):
    """The sensor hashes new content; the run it requests observes the file with the sensor's look, and
    the sensor, its cursor lost, looks with the run's observation: neither reads the file again."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("MIGRATION_BACKUP_DIR", str(tmp_path / "backups"))
    source = tmp_path / "data.json"
    monkeypatch.setenv("DATA_FILE_PATH", str(source))
    write_json(source, {"users": [{"user_id": 7}], "padding": "x" * (16 << 20)})  # big enough to count
    sensor = defs.get_sensor_def("source_file_changed")
    settings = MigrationSettings()
    with dg.instance_for_test() as instance:
        request, _ = evaluate(sensor, settings, instance)
        assert isinstance(request, dg.RunRequest)
        assert run_request(instance, request)
        observation = instance.fetch_observations(dg.AssetKey("bot_data_file"), limit=1).records[0]
        metadata = observation.asset_observation.metadata
        assert (metadata["hashed"].value, metadata["sha256"].value) == (False, request.tags["faceit_etl/source_sha256"])

        before = bytes_read()
        loaded, _ = evaluate(sensor, settings, instance)  # a reset cursor
        assert bytes_read() - before < source.stat().st_size
        assert isinstance(loaded, dg.SkipReason) and loaded.skip_message.startswith("the file holds the content run ")
