"""The catalog of user-entry fields: where each one sits in the bot's JSON and what it must be.

One row per field; coercion, the pandera schemas and the mapping all read this table, so a field
is described in one place only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


INT32_MAX = 2**31 - 1  # the largest value of PostgreSQL's `integer`, the target's type for counts


class Kind(Enum):
    TELEGRAM_ID = "telegram id"  # a positive 64-bit integer
    COUNT = "count"  # a non-negative integer, at most INT32_MAX
    TEXT = "text"
    FLAG = "flag"
    TIMESTAMP = "timestamp"
    TIER = "tier"


@dataclass(frozen=True)
class Field:
    name: str  # column name in the validated frame
    source_key: str  # key in the bot's JSON (inside "subscription" for subscription fields)
    kind: Kind
    max_length: int | None = None  # text columns: the target column's varchar length


USER_FIELDS: tuple[Field, ...] = (
    Field("user_id", "user_id", Kind.TELEGRAM_ID),
    Field("faceit_player_id", "faceit_player_id", Kind.TEXT, 255),
    Field("faceit_nickname", "faceit_nickname", Kind.TEXT, 255),
    Field("last_checked_match_id", "last_checked_match_id", Kind.TEXT, 255),
    Field("waiting_for_nickname", "waiting_for_nickname", Kind.FLAG),
    Field("language", "language", Kind.TEXT, 10),
    Field("notifications_enabled", "notifications_enabled", Kind.FLAG),
    Field("total_requests", "total_requests", Kind.COUNT),
    Field("created_at", "created_at", Kind.TIMESTAMP),
    Field("last_active_at", "last_active_at", Kind.TIMESTAMP),
)

SUBSCRIPTION_KEY = "subscription"

SUBSCRIPTION_FIELDS: tuple[Field, ...] = (
    Field("tier", "tier", Kind.TIER),
    Field("expires_at", "expires_at", Kind.TIMESTAMP),
    Field("auto_renew", "auto_renew", Kind.FLAG),
    Field("payment_method", "payment_method", Kind.TEXT, 100),
    Field("daily_requests", "daily_requests", Kind.COUNT),
    Field("last_reset_date", "last_reset_date", Kind.TIMESTAMP),
    Field("referred_by_user_id", "referred_by", Kind.TELEGRAM_ID),
    Field("referral_code", "referral_code", Kind.TEXT, 20),
    Field("referrals_count", "referrals_count", Kind.COUNT),
)

KNOWN_USER_KEYS = frozenset(f.source_key for f in USER_FIELDS) | {SUBSCRIPTION_KEY}
KNOWN_SUBSCRIPTION_KEYS = frozenset(f.source_key for f in SUBSCRIPTION_FIELDS)

# Which of an entry's fields its JSON has (the key, whatever its value): bit i stands for field i of
# USER_FIELDS or SUBSCRIPTION_FIELDS. A field the entry lacks keeps the value a row already has.
USER_PRESENT = "user_fields_present"
SUBSCRIPTION_PRESENT = "subscription_fields_present"


def presence_bit(fields: tuple[Field, ...], name: str) -> int:
    return 1 << next(i for i, f in enumerate(fields) if f.name == name)


def presence_mask(fields: tuple[Field, ...], keys) -> int:
    """The bits of the fields whose source keys are among `keys`."""
    return sum(1 << i for i, f in enumerate(fields) if f.source_key in keys)


TIERS = ("FREE", "PREMIUM", "PRO")  # the target enum's labels: the bot's enum *names*
