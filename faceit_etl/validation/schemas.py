"""pandera schemas for users and subscriptions, built from the field catalog.

Each check carries the reason a reject will show, so what pandera reports is what the user reads.
"""

from __future__ import annotations

from faceit_etl.validation.coerce import TIMESTAMP_DTYPE
from faceit_etl.validation.fields import (
    INT32_MAX,
    SUBSCRIPTION_FIELDS,
    TIERS,
    USER_FIELDS,
    Field,
    Kind,
)
from faceit_etl.validation.pandera_import import pa


# Later repeats of a user_id fail, even when the first entry is itself rejected: the bot's reader
# returns the first entry for an id. Validation also holds each batch's ids against the earlier
# batches'. A repeated referral_code is judged in validation, against the accepted entries only.
UNIQUE_COLUMNS = {
    "user_id": "user_id seen before: the first entry wins, as in the bot",
}


def _first_wins(error: str) -> pa.Check:
    return pa.Check(lambda s: ~(s.duplicated(keep="first") & s.notna()), error=error)


def _column(field: Field) -> pa.Column:
    checks: list[pa.Check] = []
    if field.kind is Kind.TELEGRAM_ID:
        dtype = "Int64"
        checks.append(pa.Check.ge(1, error="must be a positive Telegram id"))
    elif field.kind is Kind.COUNT:
        dtype = "Int64"
        checks.append(pa.Check.ge(0, error="must not be negative"))
        checks.append(pa.Check.le(INT32_MAX, error="too large for the target's integer column"))
    elif field.kind is Kind.TEXT:
        dtype = "str"
        checks.append(
            pa.Check.str_length(
                max_value=field.max_length,
                error=f"longer than {field.max_length} characters (the target column's size)",
            )
        )
        checks.append(
            pa.Check(
                lambda s: ~s.str.contains("\x00", regex=False),
                error="contains a NUL character, which PostgreSQL text cannot hold",
            )
        )
    elif field.kind is Kind.FLAG:
        dtype = "boolean"
    elif field.kind is Kind.TIER:
        dtype = "str"
        checks.append(pa.Check.isin(TIERS, error="unknown tier"))
    else:
        dtype = TIMESTAMP_DTYPE
    if field.name in UNIQUE_COLUMNS:
        checks.append(_first_wins(UNIQUE_COLUMNS[field.name]))
    return pa.Column(dtype, checks=checks, nullable=field.name != "user_id")


def schemas() -> tuple[pa.DataFrameSchema, pa.DataFrameSchema]:
    """The users and subscriptions schemas, built when a batch is judged (about 3 ms) rather than at
    import, so a changed check in `_column` is seen by the tests that judge entries."""
    users = pa.DataFrameSchema(
        {f.name: _column(f) for f in USER_FIELDS},
        name="users",
    )
    subscriptions = pa.DataFrameSchema(
        {f.name: _column(f) for f in SUBSCRIPTION_FIELDS} | {"has_subscription": pa.Column("boolean")},
        name="subscriptions",
    )
    return users, subscriptions


def failure_reason(check: str) -> str:
    """pandera names a few built-in failures itself; say them in the user's words."""
    return "is missing" if check == "not_nullable" else check

