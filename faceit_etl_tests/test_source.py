"""The source reader: every layout of the bot's file, and every way a whole file can be unreadable."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from faceit_etl.source import SourceData, SourceError, parse_source, read_source
from faceit_etl.validation import validate_entries
from faceit_etl_tests.conftest import FLAT_SAMPLE, NESTED_SAMPLE, write_json

FIRST_ENTRY = {
    "user_id": 5836464178,
    "faceit_player_id": "9a1f7aa5-36ea-4a28-80e6-b5d0a9d93650",
    "faceit_nickname": "ZywOo",
    "last_checked_match_id": None,
}
FLAT_ENTRY = FIRST_ENTRY | {
    "user_id": 558127883,
    "waiting_for_nickname": False,
    "language": "uk",
    "notifications_enabled": True,
    "created_at": "2025-08-16T18:52:14.438485",
    "last_active_at": None,
    "total_requests": 36,
}
NESTED_ENTRY = FLAT_ENTRY | {
    "user_id": 1650423192,
    "subscription": {
        "tier": "premium",
        "expires_at": "2025-12-23T09:00:00",
        "auto_renew": True,
        "payment_method": "telegram_stars",
        "daily_requests": 167,
        "last_reset_date": "2025-11-12T09:00:00",
        "referred_by": 5836464178,
        "referral_code": "4CE848F5",
        "referrals_count": 2,
    },
}


def source_error(raw: bytes, name: str = "data.json") -> str:
    with pytest.raises(SourceError) as caught:
        parse_source(raw, name)
    return str(caught.value)


# --- layouts ---------------------------------------------------------------------------------


def test_users_list_layout(tmp_path):
    path = write_json(
        tmp_path / "data.json",
        {"users": [FIRST_ENTRY, FLAT_ENTRY], "analytics": {"total_users": 2, "daily_stats": {}}},
    )
    source = read_source(path)
    assert source.layout == "users list"
    assert source.entries == [FIRST_ENTRY, FLAT_ENTRY]
    assert source.id_keys is None
    assert source.ignored_top_level_keys == ["analytics"]


def test_bare_top_level_list(tmp_path):
    path = write_json(tmp_path / "data.json", [FLAT_ENTRY, FIRST_ENTRY])
    source = read_source(path)
    assert source.layout == "bare list"
    assert source.entries == [FLAT_ENTRY, FIRST_ENTRY]
    assert source.id_keys is None
    assert source.ignored_top_level_keys == []
    outcome = validate_entries(source)
    assert outcome.valid["user_id"].tolist() == [558127883, 5836464178]
    assert outcome.rejects.empty


def test_users_keyed_by_id(tmp_path):
    path = write_json(
        tmp_path / "data.json",
        {
            "users": {
                "5836464178": FIRST_ENTRY,
                "558127883": {k: v for k, v in FLAT_ENTRY.items() if k != "user_id"},
            },
            "analytics": {},
            "version": 3,
        },
    )
    source = read_source(path)
    assert source.layout == "users keyed by id"
    assert source.id_keys == ["5836464178", "558127883"]
    assert source.entries[0] == FIRST_ENTRY
    assert "user_id" not in source.entries[1]
    assert source.ignored_top_level_keys == ["analytics", "version"]

    outcome = validate_entries(source)
    assert outcome.rejects.empty
    assert outcome.valid["user_id"].tolist() == [5836464178, 558127883]  # the second from its key
    assert outcome.valid.loc[1, "faceit_nickname"] == FLAT_ENTRY["faceit_nickname"]


def test_keyed_user_id_differing_from_its_key_is_rejected():
    raw = json.dumps(
        {
            "users": {
                "111": {"user_id": 111, "language": "en"},
                "222": {"user_id": 333, "language": "ru"},
                "444": {"user_id": "444", "language": "uk"},  # same id, as text: consistent
            }
        }
    ).encode()
    outcome = validate_entries(parse_source(raw, "keyed.json"))
    assert outcome.valid["user_id"].tolist() == [111, 444]
    assert outcome.rejects[["source_index", "user_id", "field", "reason"]].values.tolist() == [
        [1, 222, "user_id", 'user_id 333 differs from its key "222"']  # the bot reads this layout by key
    ]
    assert json.loads(outcome.rejects.at[0, "raw"]) == {"user_id": 333, "language": "ru"}


def test_keyed_by_a_key_that_is_not_an_id_and_no_user_id():
    source = parse_source(b'{"users": {"alice": {"language": "en"}}}', "keyed.json")
    outcome = validate_entries(source)
    assert outcome.valid.empty
    assert outcome.rejects[["source_index", "field", "reason"]].values.tolist() == [
        [0, "user_id", 'key "alice" names no user: the bot reads this layout by the user id written in plain '
                       "digits (1 to 9223372036854775807, no leading zero, sign, space or point), so it never reads this entry"]
    ]


def test_flat_sample_file():
    source = read_source(FLAT_SAMPLE)
    assert source.layout == "users list"
    assert source.ignored_top_level_keys == ["analytics"]
    assert len(source.entries) == 25
    assert source.entries[0]["user_id"] == 5836464178
    assert source.entries[0]["faceit_nickname"] == "ZywOo0"
    assert source.entries[3]["faceit_nickname"] == "Геннадий3"  # ensure_ascii=False text
    assert source.entries[15]["faceit_nickname"] == "ninja🐍15"
    assert all("subscription" not in entry for entry in source.entries)

    outcome = validate_entries(source)
    assert outcome.input_count == 25
    assert len(outcome.valid) == 25
    assert outcome.rejects.empty
    assert outcome.ignored_fields == {}
    first = outcome.valid.loc[0]
    assert first["user_id"] == 5836464178
    assert first["language"] == "uk"
    assert first["total_requests"] == 36
    assert first["created_at"] == pd.Timestamp("2025-05-22T20:29:41.345020", tz="UTC")
    assert outcome.valid["has_subscription"].sum() == 0


def test_nested_subscription_sample_file():
    source = read_source(NESTED_SAMPLE)
    assert source.layout == "users list"
    assert source.ignored_top_level_keys == ["analytics"]
    assert len(source.entries) == 25
    assert all(isinstance(entry["subscription"], dict) for entry in source.entries)

    outcome = validate_entries(source)
    assert len(outcome.valid) == 25
    assert outcome.rejects.empty
    assert outcome.ignored_fields == {}
    assert outcome.valid["has_subscription"].all()
    second = outcome.valid.loc[1]
    assert second["user_id"] == 837940328
    assert second["tier"] == "FREE"
    assert second["referred_by_user_id"] == 1650423192
    assert second["referral_code"] == "4CE848F5"
    assert second["daily_requests"] == 10
    assert second["last_reset_date"] == pd.Timestamp("2025-11-06T09:00:00", tz="UTC")
    assert pd.isna(second["expires_at"])
    assert outcome.valid.loc[0, "tier"] == "PREMIUM"
    assert outcome.valid.loc[0, "expires_at"] == pd.Timestamp("2025-12-23T09:00:00", tz="UTC")
    assert outcome.valid["tier"].value_counts().to_dict() == {"FREE": 20, "PREMIUM": 5}


def test_first_flat_and_nested_layouts_in_one_file():
    raw = json.dumps({"users": [FIRST_ENTRY, FLAT_ENTRY, NESTED_ENTRY]}).encode()
    outcome = validate_entries(parse_source(raw, "mixed.json"))
    assert outcome.rejects.empty
    valid = outcome.valid
    assert valid["user_id"].tolist() == [5836464178, 558127883, 1650423192]
    assert valid["has_subscription"].tolist() == [False, False, True]
    # first layout: everything past the four original fields is missing (defaults come in mapping)
    assert valid.loc[0, "faceit_nickname"] == "ZywOo"
    for column in ("language", "waiting_for_nickname", "total_requests", "created_at", "tier"):
        assert pd.isna(valid.loc[0, column]), column
    # flat layout
    assert valid.loc[1, "language"] == "uk"
    assert valid.loc[1, "total_requests"] == 36
    assert valid.loc[1, "created_at"] == pd.Timestamp("2025-08-16T18:52:14.438485", tz="UTC")
    assert pd.isna(valid.loc[1, "tier"])
    # nested subscription layout
    row = valid.loc[2]
    assert row["tier"] == "PREMIUM"
    assert row["auto_renew"] == True  # noqa: E712 (a pandas boolean)
    assert row["payment_method"] == "telegram_stars"
    assert row["daily_requests"] == 167
    assert row["referred_by_user_id"] == 5836464178
    assert row["referral_code"] == "4CE848F5"
    assert row["referrals_count"] == 2
    assert row["expires_at"] == pd.Timestamp("2025-12-23T09:00:00", tz="UTC")


def test_empty_users_list_is_a_valid_file():
    source = parse_source(b'{"users": []}', "empty-users.json")
    assert source.entries == []
    outcome = validate_entries(source)
    assert outcome.input_count == 0
    assert outcome.valid.empty and outcome.rejects.empty


def test_utf8_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"users": [FLAT_ENTRY]}, ensure_ascii=False).encode())
    source = read_source(path)
    assert source.entries == [FLAT_ENTRY]
    assert source.layout == "users list"


def test_non_ascii_text_survives(tmp_path):
    entry = FIRST_ENTRY | {"faceit_nickname": "Геннадий 🐍 ñ"}
    path = write_json(tmp_path / "data.json", {"users": [entry]})
    assert read_source(path).entries[0]["faceit_nickname"] == "Геннадий 🐍 ñ"


# --- integers beyond 64 bits -------------------------------------------------------------------


@pytest.mark.parametrize(
    "literal",
    [
        "18446744073709551616",  # 2**64
        "123456789012345678901234567890",
        "9" * 400,  # beyond what a double can hold: only Python's own parser reads it
    ],
)
def test_integer_beyond_64_bits_parses_and_the_entry_is_rejected(literal):
    raw = (
        '{"users": [{"user_id": 42, "language": "en"}, {"user_id": ' + literal + ', "language": "ru"}]}'
    ).encode()
    source = parse_source(raw, "big.json")
    assert len(source.entries) == 2
    outcome = validate_entries(source)
    assert outcome.valid["user_id"].tolist() == [42]
    rejects = outcome.rejects
    assert rejects["source_index"].tolist() == [1]
    assert rejects.at[0, "field"] == "user_id"
    reason = rejects.at[0, "reason"]
    assert reason.endswith("does not fit a 64-bit integer")
    if len(literal) <= 60:  # the exact digits, never a float's rounding of them
        assert reason == f"{literal} does not fit a 64-bit integer"
    assert json.loads(rejects.at[0, "raw"])["language"] == "ru"


def test_exact_big_integer_is_kept_when_the_standard_parser_reads_it():
    literal = "9" * 400
    source = parse_source(('[{"user_id": ' + literal + "}]").encode(), "big.json")
    assert source.entries == [{"user_id": int(literal)}]
    outcome = validate_entries(source)
    assert json.loads(outcome.rejects.at[0, "raw"]) == {"user_id": int(literal)}
    assert outcome.rejects.at[0, "reason"].startswith("99999999999999999")


@pytest.mark.parametrize(
    "number",
    [2**64, 2**64 + 1, 10**30, 2**63, -(2**63) - 1, -(10**30)],
    ids=["2**64", "2**64+1", "10**30", "2**63", "-2**63-1", "-10**30"],
)
@pytest.mark.parametrize(
    "field, in_subscription, column",
    [
        ("user_id", False, "user_id"),
        ("total_requests", False, "total_requests"),
        ("daily_requests", True, "daily_requests"),
        ("referred_by", True, "referred_by_user_id"),
        ("referrals_count", True, "referrals_count"),
    ],
)
def test_integer_beyond_64_bits_in_a_file_is_rejected_with_its_exact_digits(
    tmp_path, number, field, in_subscription, column
):
    # orjson reads 2**64 as the float 1.8446744073709552e+19 and -2**63-1 as -2**63 (which would
    # fit!) without a word: the reader must see the exact integer, and validation name its digits.
    bad = json.loads(json.dumps(NESTED_ENTRY))
    (bad["subscription"] if in_subscription else bad)[field] = number
    path = write_json(tmp_path / "data.json", {"users": [FLAT_ENTRY, bad, FIRST_ENTRY]})
    assert str(number) in path.read_text()  # the literal digits are in the file

    source = read_source(path)
    target = source.entries[1]["subscription"] if in_subscription else source.entries[1]
    assert type(target[field]) is int and target[field] == number

    outcome = validate_entries(source)
    assert outcome.valid["user_id"].tolist() == [558127883, 5836464178]  # the others are accepted
    rejects = outcome.rejects
    assert rejects[["source_index", "field", "reason"]].values.tolist() == [
        [1, column, f"{number} does not fit a 64-bit integer"]
    ]
    raw = json.loads(rejects.at[0, "raw"])
    assert (raw["subscription"] if in_subscription else raw)[field] == number


@pytest.mark.parametrize("literal", [str(2**64), str(-2**63 - 1)], ids=["20 digits", "19 digits and a sign"])
@pytest.mark.parametrize("digits_before_boundary", [1, 2, 10, 19, 20])
def test_big_integer_straddling_the_scanners_chunk_boundary_is_seen(digits_before_boundary, literal):
    """The digit scan works in 64 KiB chunks: a number cut by a chunk's end must still be found, also one
    of exactly 19 digits whose first digit is a chunk's last byte (19 digits are the least orjson misreads)."""
    head = b'{"padding": "'
    middle = b'", "users": [{"user_id": 7}, {"user_id": '
    padding = (1 << 16) - digits_before_boundary - len(head) - len(middle)
    raw = head + b"x" * padding + middle + literal.encode() + b"}]}"
    assert raw.index(literal.encode()) == (1 << 16) - digits_before_boundary
    source = parse_source(raw, "boundary.json")
    assert source.entries == [{"user_id": 7}, {"user_id": int(literal)}]
    assert validate_entries(source).rejects.at[0, "reason"] == f"{literal} does not fit a 64-bit integer"


def test_numbers_far_into_a_large_file_are_seen_by_both_scans():
    """The scans that send a file to the standard parser go chunk by chunk to its end: an integer
    beyond 64 bits and a number with a point, each past the first MiB, are still read exactly."""
    far = b'{"padding": "' + b"x" * (1 << 20) + b'", "users": [{"user_id": 7, "total_requests": '
    wide = parse_source(far + str(2**64 + 1).encode() + b"}]}", "wide.json")
    assert wide.entries == [{"user_id": 7, "total_requests": 2**64 + 1}]  # orjson: the float 2**64
    point = parse_source(far + b"253402300799.999999}]}", "point.json")
    assert repr(point.entries[0]["total_requests"]) == "253402300799.999999"  # orjson: 253402300800.0


def test_long_digits_inside_a_string_only_cost_speed(tmp_path):
    # 19 digits in a row anywhere send the file to the standard parser (a false positive here):
    # the document read is the same.
    entry = FLAT_ENTRY | {"faceit_nickname": "1234567890123456789"}
    path = write_json(tmp_path / "data.json", {"users": [entry, FIRST_ENTRY]})
    source = read_source(path)
    assert source.lenient_parse
    assert source.entries == [entry, FIRST_ENTRY]
    assert validate_entries(source).valid["faceit_nickname"].tolist() == [
        "1234567890123456789",
        "ZywOo",
    ]


def test_largest_64_bit_integer_still_parses_as_an_integer():
    source = parse_source(b'[{"user_id": 9223372036854775807}]', "max.json")
    assert source.entries == [{"user_id": 2**63 - 1}]
    assert validate_entries(source).valid["user_id"].tolist() == [2**63 - 1]


# --- whole-file errors -------------------------------------------------------------------------


def test_not_json_names_file_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "users": [\n    {"user_id": 1,}\n  ]\n}\n', encoding="utf-8")
    with pytest.raises(SourceError) as caught:
        read_source(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not valid JSON at line 3, column 19")
    assert "Expecting property name" in message


def test_truncated_file_is_not_json():
    message = source_error(b'{"users": [{"user_id": 1}', "cut.json")
    assert message.startswith("cut.json: not valid JSON at line 1, column 26")


def test_garbage_is_not_json():
    message = source_error(b"users = []\n", "data.txt")
    assert message.startswith("data.txt: not valid JSON at line 1, column 1")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.json"
    path.write_bytes(b"")
    with pytest.raises(SourceError, match="file is empty") as caught:
        read_source(path)
    assert str(caught.value) == f"{path}: file is empty, expected the bot's JSON data"


def test_whitespace_only_and_bom_only_files_are_empty():
    assert source_error(b"  \n\t\n", "blank.json") == (
        "blank.json: file is empty, expected the bot's JSON data"
    )
    assert source_error(b"\xef\xbb\xbf\n", "bom.json") == (
        "bom.json: file is empty, expected the bot's JSON data"
    )


def test_object_without_users():
    assert source_error(b"{}", "data.json") == "data.json: top-level object has no 'users' key"
    assert source_error(b'{"analytics": {"total_users": 0}}', "data.json") == (
        "data.json: top-level object has no 'users' key"
    )


@pytest.mark.parametrize(
    "users, kind",
    [('"x"', "a string"), ("5", "a number"), ("null", "null"), ("true", "a boolean")],
)
def test_users_of_the_wrong_type(users, kind):
    message = source_error(('{"users": ' + users + "}").encode(), "data.json")
    assert message == (
        f"data.json: 'users' is {kind}, expected a list of users or an object keyed by user id"
    )


@pytest.mark.parametrize(
    "document, kind",
    [(b"42", "a number"), (b"3.5", "a number"), (b'"users"', "a string"), (b"null", "null"),
     (b"false", "a boolean")],
)
def test_top_level_scalar(document, kind):
    assert source_error(document, "data.json") == (
        f"data.json: top level is {kind}, expected an object with a 'users' key or a list of users"
    )


def test_invalid_utf8(tmp_path):
    path = tmp_path / "latin1.json"
    text = '{"users": [{"user_id": 1, "faceit_nickname": "Zé"}]}'
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(SourceError) as caught:
        read_source(path)
    assert text.index("é") == 47
    assert str(caught.value) == f"{path}: not valid UTF-8 at byte 47: invalid continuation byte"


def test_invalid_utf8_start_byte():
    assert source_error(b"\xff\xfe[]", "utf16.json") == (
        "utf16.json: not valid UTF-8 at byte 0: invalid start byte"
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 10_000 + b"]" * 10_000,
        b'{"users": [' + b'{"a": ' * 10_000 + b"1" + b"}" * 10_000 + b"]}",
    ],
    ids=["lists", "objects"],
)
def test_json_nested_ten_thousand_levels(raw):
    with pytest.raises(SourceError) as caught:
        parse_source(raw, "deep.json")
    assert str(caught.value) == "deep.json: JSON nested too deeply to be the bot's data"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "data.json"
    with pytest.raises(SourceError) as caught:
        read_source(path)
    assert str(caught.value) == f"{path}: source file not found"


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(SourceError) as caught:
        read_source(tmp_path)
    assert str(caught.value) == f"{tmp_path}: is a directory, expected the bot's JSON data file"


def test_read_source_accepts_a_string_path(tmp_path):
    path = write_json(tmp_path / "data.json", [FIRST_ENTRY])
    assert read_source(str(path)) == SourceData(entries=[FIRST_ENTRY], layout="bare list", path=str(path))


def test_source_error_is_a_value_error():
    assert issubclass(SourceError, ValueError)
