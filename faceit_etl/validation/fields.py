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
    description: str = ""  # what the bot keeps in it, for the tables' column schema in the UI


USER_FIELDS: tuple[Field, ...] = (
    Field("user_id", "user_id", Kind.TELEGRAM_ID, description="the user's Telegram id"),
    Field("faceit_player_id", "faceit_player_id", Kind.TEXT, 255, description="the FACEIT player id the user linked"),
    Field("faceit_nickname", "faceit_nickname", Kind.TEXT, 255, description="the FACEIT nickname the user linked"),
    Field("last_checked_match_id", "last_checked_match_id", Kind.TEXT, 255, description="the last FACEIT match the bot reported to the user"),
    Field("waiting_for_nickname", "waiting_for_nickname", Kind.FLAG, description="the bot has asked for a nickname and waits for it"),
    Field("language", "language", Kind.TEXT, 10, description="the language the bot answers in"),
    Field("notifications_enabled", "notifications_enabled", Kind.FLAG, description="the user gets match notifications"),
    Field("total_requests", "total_requests", Kind.COUNT, description="requests the user has made in all"),
    Field("created_at", "created_at", Kind.TIMESTAMP, description="when the user first used the bot"),
    Field("last_active_at", "last_active_at", Kind.TIMESTAMP, description="when the user last used the bot"),
)

SUBSCRIPTION_KEY = "subscription"

SUBSCRIPTION_FIELDS: tuple[Field, ...] = (
    Field("tier", "tier", Kind.TIER, description="subscription tier: FREE, PREMIUM or PRO"),
    Field("expires_at", "expires_at", Kind.TIMESTAMP, description="when a paid tier ends"),
    Field("auto_renew", "auto_renew", Kind.FLAG, description="the subscription renews itself"),
    Field("payment_method", "payment_method", Kind.TEXT, 100, description="how the tier was paid: telegram_stars, referral_bonus"),
    Field("daily_requests", "daily_requests", Kind.COUNT, description="requests made since last_reset_date"),
    Field("last_reset_date", "last_reset_date", Kind.TIMESTAMP, description="when daily_requests was last reset"),
    Field("referred_by_user_id", "referred_by", Kind.TELEGRAM_ID, description="Telegram id of the user who referred this one (`referred_by` in the file)"),
    Field("referral_code", "referral_code", Kind.TEXT, 20, description="the user's own referral code"),
    Field("referrals_count", "referrals_count", Kind.COUNT, description="users this one has referred"),
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

# The tables' columns that are no field of the file: the bot's own keys and timestamps.
OTHER_COLUMNS = {
    "users.id": "row key (a UUID the bot's ORM assigns; not shown to people)",
    "users.updated_at": "when the row last changed",
    "user_subscriptions.id": "row key (a UUID)",
    "user_subscriptions.user_id": "the subscribed user's row key (users.id)",
    "user_subscriptions.created_at": "when the subscription row was created",
    "user_subscriptions.updated_at": "when the subscription row last changed",
}


def column_description(qualified: str) -> str | None:
    """What a column of `users` or `user_subscriptions` holds, for a `table.column` name."""
    table, _, column = qualified.partition(".")
    fields = {"users": USER_FIELDS, "user_subscriptions": SUBSCRIPTION_FIELDS}.get(table, ())
    found = next((f.description for f in fields if f.name == column), None)
    return found or OTHER_COLUMNS.get(qualified)
