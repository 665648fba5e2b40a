"""The data generator: deterministic, the bot's layouts and shares, and data validation accepts whole."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from datetime import datetime

import orjson
import pytest

from faceit_etl.generate import MAX_TELEGRAM_ID, generate_users, write_data_file
from faceit_etl.source import read_source
from faceit_etl.validation.validate import validate_entries
from faceit_etl_tests.conftest import FLAT_SAMPLE, NESTED_SAMPLE

INT32_MAX = 2**31 - 1
NAIVE_ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?")


@pytest.fixture(scope="module")
def users() -> list[dict]:
    return generate_users(20_000, seed=11)


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path):
    for layout in ("nested", "flat", "first"):
        a = write_data_file(tmp_path / f"a_{layout}.json", 3_000, seed=42, layout=layout).read_bytes()
        b = write_data_file(tmp_path / f"b_{layout}.json", 3_000, seed=42, layout=layout).read_bytes()
        c = write_data_file(tmp_path / f"c_{layout}.json", 3_000, seed=43, layout=layout).read_bytes()
        assert a == b
        assert a != c


def test_file_is_the_bots_document_pretty_printed(tmp_path):
    """The chunked writer must give exactly one orjson.dumps of the whole document."""
    for n in (0, 1, 20_001):  # empty, single, and more than one write chunk
        path = write_data_file(tmp_path / f"{n}.json", n, seed=3)
        document = {"users": generate_users(n, seed=3), "analytics": {"total_users": n, "daily_stats": {}}}
        assert path.read_bytes() == orjson.dumps(document, option=orjson.OPT_INDENT_2)
        assert orjson.loads(path.read_bytes()) == document


@pytest.mark.parametrize(("layout", "sample"), [("nested", NESTED_SAMPLE), ("flat", FLAT_SAMPLE)])
def test_entries_have_the_bots_keys_in_the_bots_order(layout, sample):
    bot_entry = orjson.loads(sample.read_bytes())["users"][0]
    generated = generate_users(50, seed=1, layout=layout)
    assert all(list(entry) == list(bot_entry) for entry in generated)
    if layout == "nested":
        assert all(list(e["subscription"]) == list(bot_entry["subscription"]) for e in generated)


def test_layouts_describe_the_same_users():
    nested = generate_users(500, seed=9, layout="nested")
    flat = generate_users(500, seed=9, layout="flat")
    first = generate_users(500, seed=9, layout="first")
    assert [{k: v for k, v in e.items() if k != "subscription"} for e in nested] == flat
    first_keys = ["user_id", "faceit_player_id", "faceit_nickname", "last_checked_match_id"]
    assert [{k: e[k] for k in first_keys} for e in nested] == first
    assert all(list(e) == first_keys for e in first)


def test_telegram_ids_are_unique_and_spread_beyond_32_bits(users):
    ids = [u["user_id"] for u in users]
    assert len(set(ids)) == len(ids)
    assert all(type(i) is int and 1 <= i <= MAX_TELEGRAM_ID for i in ids)
    above = sum(i > INT32_MAX for i in ids) / len(ids)
    assert 0.65 < above < 0.80  # uniform over 1..8e9: ~73 %
    assert sum(i <= INT32_MAX for i in ids) > 0


def test_tiers_are_lower_case_with_the_specified_shares(users):
    tiers = Counter(u["subscription"]["tier"] for u in users)
    assert set(tiers) == {"free", "premium", "pro"}
    assert tiers["free"] / len(users) == pytest.approx(0.70, abs=0.025)
    assert tiers["premium"] / len(users) == pytest.approx(0.20, abs=0.025)
    assert tiers["pro"] / len(users) == pytest.approx(0.10, abs=0.02)
    free = [u["subscription"] for u in users if u["subscription"]["tier"] == "free"]
    assert all(s["expires_at"] is None and s["payment_method"] is None and not s["auto_renew"] for s in free)
    paid_methods = {u["subscription"]["payment_method"] for u in users if u["subscription"]["tier"] != "free"}
    assert paid_methods == {"telegram_stars", "referral_bonus"}


def test_referrals_point_earlier_later_and_outside_the_file(users):
    position = {u["user_id"]: i for i, u in enumerate(users)}
    referred = [(i, u["subscription"]["referred_by"]) for i, u in enumerate(users) if u["subscription"]["referred_by"]]
    assert len(referred) / len(users) == pytest.approx(0.30, abs=0.02)
    earlier = sum(1 for i, r in referred if r in position and position[r] < i)
    later = sum(1 for i, r in referred if r in position and position[r] > i)
    absent = sum(1 for _, r in referred if r not in position)
    assert earlier > 0 and later > 0
    assert 0.05 < absent / len(referred) < 0.30
    assert all(r != users[i]["user_id"] for i, r in referred)  # nobody refers themself
    counts = Counter(r for _, r in referred)
    assert all(u["subscription"]["referrals_count"] == counts.get(u["user_id"], 0) for u in users)


def test_faceit_accounts_referral_codes_languages(users):
    no_account = [u for u in users if u["faceit_player_id"] is None]
    assert len(no_account) / len(users) == pytest.approx(0.25, abs=0.02)
    assert all(u["faceit_nickname"] is None and u["last_checked_match_id"] is None for u in no_account)
    assert any(u["waiting_for_nickname"] for u in no_account)
    accounts = [u["faceit_player_id"] for u in users if u["faceit_player_id"] is not None]
    uuid4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
    assert all(uuid4.fullmatch(a) for a in accounts)
    assert len(set(accounts)) == len(accounts)

    codes = [u["subscription"]["referral_code"] for u in users if u["subscription"]["referral_code"]]
    assert len(codes) / len(users) == pytest.approx(0.60, abs=0.02)
    assert len(set(codes)) == len(codes)
    assert all(re.fullmatch(r"[0-9A-F]{8}", c) for c in codes)

    languages = Counter(u["language"] for u in users)
    assert languages.most_common(1)[0][0] == "ru" and len(languages) >= 5
    assert all(len(language) <= 10 for language in languages)


def test_timestamps_are_naive_isoformat_with_and_without_microseconds(users):
    texts = [u["created_at"] for u in users] + [
        u["subscription"][k] for u in users for k in ("expires_at", "last_reset_date") if u["subscription"][k]
    ] + [u["last_active_at"] for u in users if u["last_active_at"]]
    assert all(NAIVE_ISO.fullmatch(t) for t in texts)
    assert all(datetime.fromisoformat(t).isoformat() == t for t in texts)  # what isoformat() writes
    with_fraction = sum("." in t for t in texts) / len(texts)
    assert 0.4 < with_fraction < 0.8
    assert all(u["last_active_at"] is None or u["last_active_at"] > u["created_at"] for u in users)
    assert 0.2 < sum(u["last_active_at"] is None for u in users) / len(users) < 0.4


@pytest.mark.parametrize("layout", ["nested", "flat", "first"])
def test_validation_accepts_every_generated_entry(tmp_path, layout):
    path = write_data_file(tmp_path / "data.json", 5_000, seed=5, layout=layout)
    outcome = validate_entries(read_source(path))
    assert outcome.input_count == 5_000
    assert outcome.rejects.empty
    assert len(outcome.valid) == 5_000
    assert outcome.ignored_fields == {}


@pytest.mark.db  # starts a process
def test_command_line_writes_the_same_file(tmp_path):
    out = tmp_path / "cli.json"
    done = subprocess.run(
        [sys.executable, "-m", "faceit_etl.generate", str(out), "--users", "120", "--seed", "4", "--layout", "flat"],
        capture_output=True, text=True, check=True,
    )
    assert "120 users" in done.stdout
    assert out.read_bytes() == write_data_file(tmp_path / "api.json", 120, seed=4, layout="flat").read_bytes()


def test_unknown_layout_is_refused():
    with pytest.raises(ValueError, match="unknown layout 'keyed'"):
        generate_users(10, layout="keyed")
