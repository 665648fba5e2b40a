"""What a run no longer does twice: a step value read back by the process that wrote it."""

from __future__ import annotations

from pathlib import Path

import pytest

import faceit_etl
from faceit_etl.defs import io
from faceit_etl_tests.conftest import NESTED_SAMPLE
from faceit_etl_tests.test_api import here, table_users, sample_users  # noqa: F401 (here: a fixture)
from faceit_etl_tests.test_cli import instance_at, workdir  # noqa: F401 (workdir: a fixture)


@pytest.mark.db
def test_a_runs_later_steps_in_its_process_take_its_values_without_reading_them_back(here, db, monkeypatch):
    """Each value is written for a resume, but the steps after it in the same process take the object: no
    step value of the run is read from disk; the rows are the file's; once the run ends none is held."""
    real = Path.read_bytes
    read: list[Path] = []
    monkeypatch.setattr(Path, "read_bytes", lambda path: (read.append(path), real(path))[1])

    result = faceit_etl.migrate(NESTED_SAMPLE)

    with instance_at(here) as instance:
        values = Path(instance.storage_directory()) / "runs" / result.run_id
    assert result.success
    assert sorted(p.name for p in values.iterdir()) == [
        "mapped_subscriptions", "mapped_users", "raw_json", "source_backup", "validated_frame"
    ]
    assert [p for p in read if values in p.parents] == []
    assert table_users(db) == sorted((u["user_id"], u["faceit_nickname"]) for u in sample_users(NESTED_SAMPLE))
    assert io._HANDED_OVER == {}
