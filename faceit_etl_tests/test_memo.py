"""The validation outcome kept by input identity: a re-run of the same bytes in the same time zone
reuses it, anything else is judged again, and a damaged or pruned outcome is judged again, never
trusted."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import replace

import pandas as pd

from faceit_etl.identity import input_identity
from faceit_etl.source import parse_source
from faceit_etl.validation import memo, validate_entries
from faceit_etl_tests.conftest import NESTED_SAMPLE


def sample_source():
    raw = NESTED_SAMPLE.read_bytes()
    return replace(parse_source(raw, NESTED_SAMPLE), sha256=hashlib.sha256(raw).hexdigest())


def test_the_first_run_judges_and_keeps_the_outcome_and_a_re_run_reuses_it(tmp_path):
    source = sample_source()
    folder = tmp_path / "validated"

    judged, reused = memo.validate_once(source, "Europe/Moscow", folder)
    again, reused_again = memo.validate_once(source, "Europe/Moscow", folder)

    identity = input_identity(source.sha256, "Europe/Moscow")
    assert (reused, reused_again) == (False, True)
    assert (judged.input_identity, judged.source_sha256, judged.source_timezone) == (identity, source.sha256, "Europe/Moscow")
    pd.testing.assert_frame_equal(judged.valid, validate_entries(source, "Europe/Moscow").valid)
    pd.testing.assert_frame_equal(again.valid, judged.valid)
    pd.testing.assert_frame_equal(again.rejects, judged.rejects)
    assert (again.input_identity, again.input_count) == (identity, judged.input_count)
    assert [p.name for p in folder.iterdir()] == [f"{identity}.pickle"]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / f"{identity}.pickle").stat().st_mode) == 0o600


def test_another_time_zone_is_judged_again_and_kept_beside(tmp_path):
    source = sample_source()
    folder = tmp_path / "validated"
    memo.validate_once(source, "UTC", folder)

    moscow, reused = memo.validate_once(source, "Europe/Moscow", folder)

    assert not reused and moscow.source_timezone == "Europe/Moscow"
    assert sorted(p.stem for p in folder.iterdir()) == sorted(
        input_identity(source.sha256, zone) for zone in ("UTC", "Europe/Moscow"))


def test_a_damaged_outcome_is_judged_again_and_replaced(tmp_path):
    source = sample_source()
    folder = tmp_path / "validated"
    judged, _ = memo.validate_once(source, "UTC", folder)
    kept = folder / f"{judged.input_identity}.pickle"
    kept.write_bytes(kept.read_bytes()[:100])  # cut short: a disk that filled up, a copy stopped

    assert memo.recall(folder, judged.input_identity) is None and not kept.exists()
    again, reused = memo.validate_once(source, "UTC", folder)
    assert not reused and kept.exists()
    pd.testing.assert_frame_equal(again.valid, judged.valid)


def test_only_the_newest_three_outcomes_are_kept(tmp_path):
    folder = tmp_path / "validated"
    for n in range(5):
        memo.store(folder, f"outcome-{n}", {"n": n})
        os.utime(folder / f"outcome-{n}.pickle", ns=(n * 10**9, n * 10**9))  # one second apart

    assert sorted(p.name for p in folder.iterdir()) == ["outcome-2.pickle", "outcome-3.pickle", "outcome-4.pickle"]
    assert memo.recall(folder, "outcome-4") == {"n": 4} and memo.recall(folder, "outcome-0") is None
