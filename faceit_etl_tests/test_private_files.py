"""Files written while another run writes the same ones: two runs of one file store the same
validated value and prune the same folder at once, and neither may fail for it."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from faceit_etl.backups import newest_first, private_writer
from faceit_etl.validation import memo


def test_two_writers_of_one_path_at_once_both_finish_and_the_last_one_stands(tmp_path):
    path = tmp_path / "value.pickle"
    first, second = private_writer(path), private_writer(path)
    first.__enter__().write(b"first")
    second.__enter__().write(b"second")
    first.__exit__(None, None, None)
    assert path.read_bytes() == b"first"
    second.__exit__(None, None, None)

    assert path.read_bytes() == b"second"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["value.pickle"]


def test_a_writer_that_fails_leaves_the_file_as_it_was_and_no_temp_file(tmp_path):
    path = tmp_path / "value.pickle"
    path.write_bytes(b"before")
    with pytest.raises(OSError, match="disk gone"), private_writer(path) as handle:
        handle.write(b"half")
        raise OSError("disk gone")

    assert path.read_bytes() == b"before"
    assert [p.name for p in tmp_path.iterdir()] == ["value.pickle"]


def test_runs_storing_and_pruning_outcomes_in_one_folder_at_once_all_succeed(tmp_path):
    folder, failures = tmp_path / "validated", []

    def store_many(worker: int) -> None:
        try:
            for n in range(40):
                memo.store(folder, f"{worker}-{n}", {"worker": worker, "n": n})
        except Exception as exc:  # noqa: BLE001 - the test reports what any thread met
            failures.append(repr(exc))

    threads = [threading.Thread(target=store_many, args=(worker,)) for worker in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    left = sorted(folder.iterdir())
    assert len(left) == memo.KEEP and all(p.suffix == ".pickle" for p in left)
    assert all(memo.recall(folder, p.stem) is not None for p in left)


def test_newest_first_orders_by_age_and_leaves_out_what_another_run_deleted(tmp_path):
    paths = [tmp_path / name for name in ("old", "gone", "new")]
    for age, path in enumerate(paths):
        path.write_text(path.name)
        os.utime(path, ns=(age * 10**9, age * 10**9))
    paths[1].unlink()

    assert newest_first(paths) == [paths[2], paths[0]]
