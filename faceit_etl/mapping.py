"""Validated entries → frames in the layout of the bot's tables, with the bot's defaults.

Every user gets a subscription row: entries of the first and flat layouts (no, or a null,
`subscription`) get the bot's default FREE one. Row ids are derived from the Telegram id, so the
same file always maps to the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from faceit_etl.validation.fields import (
    SUBSCRIPTION_FIELDS,
    SUBSCRIPTION_PRESENT,
    USER_FIELDS,
    USER_PRESENT,
    presence_bit,
)

# The tables' columns the frames fill, in the tables' order: the row id, (a subscription's user row
# id,) then the catalog's fields.
USER_COLUMNS = ["id", *(f.name for f in USER_FIELDS)]
SUBSCRIPTION_COLUMNS = ["id", "user_id", *(f.name for f in SUBSCRIPTION_FIELDS)]

# Each mapped row's presence bits (see `fields.py`), after its table's columns: a field the file's
# entry lacks gets the bot's default in a new row and keeps an existing row's value.
PRESENT = "fields_present"

# The bot's values for a field absent from its file's entry. A null given is the file's value and stays
# null: the bot's columns are nullable and its ORM's column defaults fire only for a value not given.
USER_DEFAULTS = {
    "waiting_for_nickname": False,
    "language": "ru",
    "notifications_enabled": True,
    "total_requests": 0,
}
SUBSCRIPTION_DEFAULTS = {
    "tier": "FREE",
    "auto_renew": False,
    "daily_requests": 0,
    "referrals_count": 0,
}

# Row ids are UUIDv8 (RFC 9562) holding the Telegram id itself: deterministic, reversible and
# vectorised (uuid5 costs ~4 s per million rows here). 48 bits of tag, then version 8, a byte
# naming the table, the variant bits, and the 63-bit Telegram id.
_UUID_TAG = 0xFCE17E7A0000  # "faceit-etl"
USER_ID_KIND = 0x01
SUBSCRIPTION_ID_KIND = 0x02
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


@dataclass
class MappedFrames:
    users: pd.DataFrame
    subscriptions: pd.DataFrame
    defaults_applied: dict[str, int]


def derive_ids(telegram_ids: pd.Series, kind: int) -> pd.Series:
    """The row id of each Telegram id, as canonical UUID text."""
    ids = telegram_ids.to_numpy(dtype=np.uint64)
    high = np.uint64((_UUID_TAG << 16) | (0x8 << 12) | (kind << 4)) | (ids >> np.uint64(62))
    low = (np.uint64(0b10) << np.uint64(62)) | (ids & np.uint64((1 << 62) - 1))
    raw = np.empty((len(ids), 2), dtype=">u8")
    raw[:, 0], raw[:, 1] = high, low
    octets = raw.view(np.uint8).reshape(len(ids), 16)
    digits = np.empty((len(ids), 32), dtype=np.uint8)
    digits[:, 0::2], digits[:, 1::2] = _HEX[octets >> 4], _HEX[octets & 0x0F]
    text = np.full((len(ids), 36), ord("-"), dtype=np.uint8)
    for start, stop, offset in ((0, 8, 0), (8, 12, 1), (12, 16, 2), (16, 20, 3), (20, 32, 4)):
        text[:, start + offset : stop + offset] = digits[:, start:stop]
    offsets = np.arange(0, 36 * (len(ids) + 1), 36, dtype=np.int32)
    strings = pa.StringArray.from_buffers(len(ids), pa.py_buffer(offsets), pa.py_buffer(text))
    return pd.Series(pd.array(strings, dtype="str"), index=telegram_ids.index)


def map_frames(valid: pd.DataFrame) -> MappedFrames:
    defaults_applied: dict[str, int] = {}

    def with_defaults(frame: pd.DataFrame, defaults: dict, table: str, fields, present: np.ndarray) -> pd.DataFrame:
        for column, value in defaults.items():
            absent = (present & presence_bit(fields, column)) == 0
            if absent.any():
                defaults_applied[f"{table}.{column}"] = int(absent.sum())
                frame[column] = frame[column].mask(absent, value)
        return frame

    # The selections share the validated columns (pandas copies on write): only columns written here are new.
    users = valid[USER_COLUMNS[1:]]
    users.insert(0, "id", derive_ids(valid["user_id"], USER_ID_KIND))
    users = with_defaults(users, USER_DEFAULTS, "users", USER_FIELDS, valid[USER_PRESENT].to_numpy(dtype="int64"))
    users[PRESENT] = valid[USER_PRESENT].to_numpy()

    subscriptions = valid[SUBSCRIPTION_COLUMNS[2:]]
    subscriptions.insert(0, "id", derive_ids(valid["user_id"], SUBSCRIPTION_ID_KIND))
    subscriptions.insert(1, "user_id", users["id"])
    subscriptions = with_defaults(
        subscriptions, SUBSCRIPTION_DEFAULTS, "user_subscriptions", SUBSCRIPTION_FIELDS,
        valid[SUBSCRIPTION_PRESENT].to_numpy(dtype="int64"),
    )
    subscriptions[PRESENT] = valid[SUBSCRIPTION_PRESENT].to_numpy()
    no_subscription = int((~valid["has_subscription"]).sum())
    if no_subscription:
        defaults_applied["user_subscriptions (whole row: entry had none)"] = no_subscription
    return MappedFrames(
        users.reset_index(drop=True),
        subscriptions.reset_index(drop=True),
        defaults_applied,
    )
