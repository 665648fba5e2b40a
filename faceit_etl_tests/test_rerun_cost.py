"""What a run no longer does twice: a step value read back by the process that wrote it."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import dagster as dg
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
        started = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.STEP_START)
        run_worker = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_START)
    assert result.success
    assert len(started) == 7  # every step, each in the run's own process: the spy above sees its reads
    assert {entry.dagster_event.pid for entry in started} == {run_worker[0].dagster_event.pid}
    assert sorted(p.name for p in values.iterdir()) == [
        "mapped_subscriptions", "mapped_users", "raw_json", "source_backup", "validated_frame"
    ]
    assert [p for p in read if values in p.parents] == []
    assert table_users(db) == sorted((u["user_id"], u["faceit_nickname"]) for u in sample_users(NESTED_SAMPLE))
    assert io._HANDED_OVER == {}


@pytest.mark.db
def test_the_validation_steps_value_is_the_kept_outcomes_file_not_a_second_pickle(here, db):
    """The outcome the step keeps for re-runs is already pickled: the run's step value is that file, linked,
    on the first run (judged) and on a re-run (reused), and it holds the outcome of the file's entries."""
    first = faceit_etl.migrate(NESTED_SAMPLE)
    again = faceit_etl.migrate(NESTED_SAMPLE)

    with instance_at(here) as instance:
        storage = Path(instance.storage_directory())
    [kept] = (storage / "validated").glob("*.pickle")
    assert first.success and again.success
    for result in (first, again):
        assert (storage / "runs" / result.run_id / "validated_frame").samefile(kept)
    outcome = pickle.loads(kept.read_bytes())
    assert outcome.valid["user_id"].tolist() == [u["user_id"] for u in sample_users(NESTED_SAMPLE)]
    assert f"{outcome.input_identity}.pickle" == kept.name


@pytest.mark.db
def test_where_no_link_can_be_made_the_validation_steps_value_is_pickled(here, db, monkeypatch):
    """A file system without hard links (or a kept outcome pruned meanwhile): the value is written whole,
    and a resume could read it."""
    def refuse(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)
    result = faceit_etl.migrate(NESTED_SAMPLE)

    with instance_at(here) as instance:
        storage = Path(instance.storage_directory())
    [kept] = (storage / "validated").glob("*.pickle")
    value = storage / "runs" / result.run_id / "validated_frame"
    assert result.success and not value.samefile(kept)
    assert value.stat().st_nlink == 1 and value.read_bytes() == kept.read_bytes()
