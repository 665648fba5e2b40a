"""A run's input identity: each of its ingredients (the file's sha256, the source time zone, this code)
changes it, so a run never reuses an outcome judged from anything else."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from faceit_etl import identity
from faceit_etl.identity import code_version, input_identity
from faceit_etl_tests.conftest import NESTED_SAMPLE, make_resources, write_json
from faceit_etl_tests.test_pipeline import metadata_of, run

SHA = hashlib.sha256(b"a bot file").hexdigest()
ingredients = st.tuples(st.text(alphabet="0123456789abcdef", min_size=1, max_size=64), st.text(min_size=1, max_size=40))


def test_the_identity_is_a_sha256_of_all_three_ingredients():
    expected = hashlib.sha256(f"{SHA}\0Europe/Moscow\0{code_version()}".encode()).hexdigest()
    assert input_identity(SHA, "Europe/Moscow") == expected
    assert input_identity(SHA, "Europe/Moscow") == input_identity(SHA, "Europe/Moscow")


def test_each_ingredient_changes_the_identity(monkeypatch):
    base = input_identity(SHA, "UTC")
    assert input_identity(hashlib.sha256(b"another file").hexdigest(), "UTC") != base
    assert input_identity(SHA, "Asia/Tokyo") != base
    monkeypatch.setattr(identity, "code_version", lambda: "0" * 64)  # as after any edit of the code
    assert input_identity(SHA, "UTC") != base


@given(first=ingredients, second=ingredients)
def test_different_ingredients_never_share_an_identity(first, second):
    """Separated, so ("ab", "c") and ("a", "bc") differ too."""
    assert (input_identity(*first) == input_identity(*second)) == (first == second)


@pytest.mark.parametrize("sha", [None, ""])
def test_an_unknown_file_has_no_identity(sha):
    with pytest.raises(ValueError) as refused:
        input_identity(sha, "UTC")
    assert str(refused.value) == "the source's sha256 is unknown, so the run's input cannot be identified"


def test_the_code_version_covers_every_module_but_the_dev_tools_and_the_libraries_that_judge(monkeypatch, tmp_path):
    package = identity.Path(identity.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        if path.parent == package and path.name in ("benchmark.py", "generate.py"):
            continue
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    for library in ("numpy", "orjson", "pandas", "pandera", "pyarrow", "pysimdjson"):
        digest.update(f"{library}=={identity.version(library)}\0".encode())
    assert code_version.__wrapped__() == digest.hexdigest() == code_version()

    real = identity.version
    monkeypatch.setattr(identity, "version", lambda library: "0.0" if library == "pandera" else real(library))
    assert code_version.__wrapped__() != digest.hexdigest()


def table_timestamps(db) -> dict[int, tuple]:
    rows = db.execute(
        """SELECT u.user_id, u.created_at, u.last_active_at, s.expires_at, s.last_reset_date
           FROM users u JOIN user_subscriptions s ON s.user_id = u.id"""
    ).fetchall()
    return {row[0]: row[1:] for row in rows}


def file_timestamps(document: dict, zone: str) -> dict[int, tuple]:
    def at(text):
        return None if text is None else datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))

    return {user["user_id"]: (at(user["created_at"]), at(user["last_active_at"]),
                              at((user.get("subscription") or {}).get("expires_at")),
                              at((user.get("subscription") or {}).get("last_reset_date")))
            for user in document["users"]}


def test_the_same_file_in_another_time_zone_is_judged_again_and_its_timestamps_move(database_url, db, tmp_path):
    document = json.loads(NESTED_SAMPLE.read_text())
    source = write_json(tmp_path / "data.json", document)
    with dg.instance_for_test() as instance:
        first = run(make_resources(database_url, source, tmp_path), instance)
        assert first.success and table_timestamps(db) == file_timestamps(document, "UTC")

        tokyo = run(make_resources(database_url, source, tmp_path, source_timezone="Asia/Tokyo"), instance)

        assert tokyo.success
        assert table_timestamps(db) == file_timestamps(document, "Asia/Tokyo")
        judged = metadata_of(tokyo, "validated_frame")
        assert not judged["reused_earlier_outcome"]
        assert judged["input_identity"] != metadata_of(first, "validated_frame")["input_identity"]
        assert metadata_of(tokyo, "postgres_tables")["compared"] == "every row of the file was compared with the tables"
        assert table_timestamps(db) != file_timestamps(document, "UTC")  # the zone really moves them

        back = run(make_resources(database_url, source, tmp_path), instance)  # UTC again: the first outcome

        assert back.success and metadata_of(back, "validated_frame")["reused_earlier_outcome"]
        assert metadata_of(back, "validated_frame")["input_identity"] == metadata_of(first, "validated_frame")["input_identity"]
        assert table_timestamps(db) == file_timestamps(document, "UTC")
