"""Turn one column of raw JSON values into a typed pandas column, keeping the meaning of each value.

Coercions applied (and only these): strings of ASCII digits only (no sign, space or underscore)
and numbers with a point or exponent whose decimal text is a whole number below 2**53 (beyond it a
float stands for several integers) to integers; tiers spelled free, premium or pro in any ASCII
letter case (nothing around them) to the enum name; timestamps in ISO 8601 calendar form
`YYYY-MM[-DD[Thh[:mm[:ss[.f]]]][offset]]` (`T`, `t` or a space; `.` or `,` before at most 6
fraction digits; offset `Z`, `z`, `+hh`, `+hhmm` or `+hh:mm`), or epoch seconds as a JSON number,
judged on its decimal text (never its nearest float). Naive timestamps are read in the source timezone.
A value is never trimmed, case-folded beyond ASCII or rounded: such a value is rejected.
Everything else is left missing and reported as an error `{position: reason}`.
Absent and null values stay missing without an error: the mapping gives absent ones the bot's defaults.

A value is accepted only if its column holds it with the same meaning: integers within 64 bits,
instants within years 1 to 9999 in UTC (PostgreSQL writes no year 0, the bot's Python datetimes
stop at 9999; epoch *milliseconds* land beyond 9999 when read as seconds and are refused so).
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pyarrow as pa

from faceit_etl.source.repeats import LongInteger, written
from faceit_etl.validation.fields import TIERS, Kind

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
INT64_DIGITS = 19
FLOAT_EXACT = 2**53  # from here on a float is the rounding of more than one integer
_INTEGER_TEXT = re.compile(r"[0-9]+")  # int() would also read "١٢٣", " 1", "+1" and "1_000"
YEARS = (1, 9999)
# Matched against stripped text, in what RE2 runs natively: `\s` or `\d` would send pandas back
# to Python's `re`, value by value (3x slower at 1M users).
_OFFSET = r"(?:[zZ]|[+-][0-9]{2}(?::?[0-9]{2})?)"
_FORM = rf"[0-9]{{4}}-[0-9]{{2}}(?:-[0-9]{{2}}(?:[Tt ][0-9]{{2}}(?::[0-9]{{2}}(?::[0-9]{{2}}(?:[.,][0-9]+)?)?)?{_OFFSET}?)?)?"
_HAS_OFFSET = rf"{_OFFSET}$"  # only tried on text of `_FORM`, where a date's "-DD" has no time before it
_DATE_ONLY = r"[0-9]{4}-[0-9]{2}(?:-[0-9]{2})?"
_UNUSUAL = r"[tz,]|[.][0-9]{7}"  # spellings pandas does not read as they are: normalised one by one
# The bot's own spelling (naive `isoformat()`): of `_FORM`, not `_UNUSUAL`, with no offset or date alone,
# so a column of it alone needs one RE2 pass instead of the four that sort out the other forms.
_BOTS_FORM = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:[.][0-9]{1,6})?"
_FRACTION = re.compile(r"[.,]([0-9]+)")
_OFFSET_PARTS = re.compile(r"[+-]([0-9]{2}):?([0-9]{2})?$")  # searched from the time on: a date's "-DD" is none
FRACTION_DIGITS = 6  # the target's timestamptz holds microseconds
TIMESTAMP_DTYPE = "datetime64[us, UTC]"

Errors = dict[int, str]


def describe_value(value: Any) -> str:
    """A short rendering of a raw value for a reject reason, as JSON writes it: a string keeps its double
    quotes, so `"true"` (text) and `true`, `"5"` and `5` stay apart in every reason."""
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    text = repr(value) if isinstance(value, LongInteger) else written(value)  # its digits' start and count
    return text if len(text) <= 60 else text[:57] + "..."


def text_series(values: list[str | None]) -> pd.Series:
    """Strings (or None) as a pandas `str` column, built by Arrow in one pass: pandas' own
    constructor checks each value in Python (~2 s per million) and builds the same column."""
    return pd.Series(pd.array(pa.array(values, type=pa.large_string()), dtype="str"))


def flag_series(values: list[bool | None]) -> pd.Series:
    """True, False (or None) as a pandas `boolean` column, built by Arrow in one pass."""
    return pd.Series(pa.array(values, type=pa.bool_()).to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype()}.get))


def coerce_column(kind: Kind, values: list[Any], source_timezone: str) -> tuple[pd.Series, Errors]:
    if kind in (Kind.TELEGRAM_ID, Kind.COUNT):
        return coerce_integers(values)
    if kind is Kind.TEXT:
        return coerce_text(values)
    if kind is Kind.FLAG:
        return coerce_flags(values)
    if kind is Kind.TIER:
        return coerce_tiers(values)
    return coerce_timestamps(values, source_timezone)


def only_of(values: list[Any], *kinds: type) -> bool:
    """Whether every value is exactly of one of `kinds` (a subclass is not) or None: one pass over
    their types in C, where a comparison per value in Python costs several times more."""
    return set(map(type, values)) <= {*kinds, type(None)}


def coerce_integers(values: list[Any]) -> tuple[pd.Series, Errors]:
    errors: Errors = {}
    if only_of(values, int):
        numbers = [v for v in values if v is not None]
        if not numbers or (INT64_MIN <= min(numbers) and max(numbers) <= INT64_MAX):
            return pd.Series(pd.array(values, dtype="Int64")), errors
    out: list[int | None] = []
    for position, value in enumerate(values):
        number, reason = _integer(value)
        if reason:
            errors[position] = reason
        out.append(number)
    return pd.Series(pd.array(out, dtype="Int64")), errors


def _integer(value: Any) -> tuple[int | None, str | None]:
    if value is None:
        return None, None
    if isinstance(value, bool):
        return None, f"expected a whole number, got {describe_value(value)}"
    if isinstance(value, LongInteger):
        return None, f"{describe_value(value)} does not fit a 64-bit integer"
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        written = _decimal(value)
        if not written.is_finite() or written != written.to_integral_value():
            return None, f"expected a whole number, got {describe_value(value)}"
        if abs(written) >= FLOAT_EXACT:
            return None, f"{describe_value(value)} is a decimal number beyond 2**53, where it is no exact whole number"
        number = int(written)
    elif isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        if len(value.lstrip("0")) > INT64_DIGITS:  # before int(): no digit limit
            return None, f"{describe_value(value)} does not fit a 64-bit integer"
        number = int(value)
    else:
        return None, f"expected a whole number, got {describe_value(value)}"
    if not INT64_MIN <= number <= INT64_MAX:
        return None, f"{describe_value(value)} does not fit a 64-bit integer"
    return number, None


def _decimal(value: float) -> Decimal:
    """The decimal a float was written as: a file's own text (`WrittenFloat`), else its shortest
    spelling. Judged so, `5.00000000000000000001` is no whole number though its float is 5.0."""
    return Decimal(repr(value))


def _epoch_instant(value: int | float) -> tuple[pd.Timestamp | None, str | None]:
    """The instant of epoch seconds, judged on the decimal written: `253402300799.999999` is
    9999-12-31T23:59:59.999999 exactly, though its nearest float is a moment of year 10000."""
    seconds = Decimal(value) if isinstance(value, int) else _decimal(value)
    if not seconds.is_finite() or not _EPOCH_RANGE[0] <= seconds <= _EPOCH_RANGE[1]:
        return None, (
            f"epoch seconds {describe_value(value)} are out of range: only seconds from year 1 to "
            "9999 are read (milliseconds would land beyond it)"
        )
    sign, digits, exponent = seconds.as_tuple()
    shift = exponent + FRACTION_DIGITS  # where the microseconds end among the digits
    if shift < 0 and any(digits[shift:]):
        return None, (
            f"epoch seconds {describe_value(value)} have more precision than the column holds "
            "(microseconds): rounding would change the value"
        )
    whole = digits[:shift] if shift < 0 else digits
    micros = int("".join(map(str, whole)) or "0") * 10 ** max(shift, 0) if any(whole) else 0
    return pd.Timestamp(-micros if sign else micros, unit="us", tz="UTC"), None


def _only(values: list[Any], kind: type, expected: str) -> tuple[list[Any], Errors]:
    """Values of exactly `kind` (or null) pass; any other is missing and gets an error."""
    if only_of(values, kind):
        return values, {}
    errors = {
        position: f"expected {expected}, got {describe_value(value)}"
        for position, value in enumerate(values)
        if value is not None and type(value) is not kind
    }
    if errors:
        values = [None if position in errors else v for position, v in enumerate(values)]
    return values, errors


def coerce_text(values: list[Any]) -> tuple[pd.Series, Errors]:
    values, errors = _only(values, str, "text")
    return text_series(values), errors


def coerce_flags(values: list[Any]) -> tuple[pd.Series, Errors]:
    values, errors = _only(values, bool, "true or false")
    return flag_series(values), errors


def coerce_tiers(values: list[Any]) -> tuple[pd.Series, Errors]:
    if only_of(values, str):  # a few distinct spellings, each judged once
        names = {value: _tier_name(value) for value in set(values)}
        if all(name is not None for value, name in names.items() if value is not None):
            return text_series(list(map(names.__getitem__, values))), {}
    errors: Errors = {}
    out: list[str | None] = []
    for position, value in enumerate(values):
        name = _tier_name(value)
        if value is not None and name is None:
            errors[position] = f"unknown tier {describe_value(value)}, expected one of free, premium, pro"
        out.append(name)
    return text_series(out), errors


def _tier_name(value: Any) -> str | None:
    """The enum name a tier is spelled as, or None."""
    name = value.upper() if isinstance(value, str) and value.isascii() else None  # "ı".upper() is "I"
    return name if name in TIERS else None


def coerce_timestamps(values: list[Any], source_timezone: str) -> tuple[pd.Series, Errors]:
    """Parse timestamps to UTC; vectorised for strings, with a per-value pass only for failures.

    Every value's outcome is its own: strings of another form are refused before parsing, and
    what is parsed is held at microseconds, so no neighbour can switch the column to nanoseconds
    (whose range ends in 2262) or to any other conversion."""
    result = pd.Series(pd.NaT, index=range(len(values)), dtype=TIMESTAMP_DTYPE)
    errors: Errors = {}
    only_text = only_of(values, str)
    texts = text_series(values if only_text else [v if type(v) is str else None for v in values])
    formed, aware = _forms(texts, values, errors)
    naive = formed & ~aware
    if aware.any():
        parsed = pd.to_datetime(texts[aware], format="ISO8601", utc=True, errors="coerce")
        result[aware] = parsed.astype(TIMESTAMP_DTYPE)
    if naive.any():
        local = pd.to_datetime(texts[naive], format="ISO8601", errors="coerce").astype("datetime64[us]")
        # pandas refuses to localize a column holding any instant beyond Python's years 1-9999
        edge = local.notna() & ~local.between(_SAFE_LOCAL[0], _SAFE_LOCAL[1])
        result[local.index[~edge]] = local[~edge].dt.tz_localize(
            source_timezone, ambiguous="NaT", nonexistent="NaT"
        ).dt.tz_convert("UTC")
        for position, moment in local[edge].items():
            result.iat[position] = _localized_at_the_edge(moment, source_timezone)

    for position in (formed & result.isna()).to_numpy().nonzero()[0].tolist():
        errors[position] = _timestamp_failure(texts.iat[position], values[position], source_timezone)
    years = result.dt.year
    for position in (result.notna() & ~years.between(*YEARS)).to_numpy().nonzero()[0].tolist():
        errors[position] = f"timestamp {describe_value(values[position])} is {_beyond(result.iat[position])}"
        result.iat[position] = pd.NaT
    for position in [] if only_text else [p for p, v in enumerate(values) if v is not None and type(v) is not str]:
        value = values[position]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            result.iat[position], reason = _epoch_instant(value)
            if reason:
                errors[position] = reason
        else:
            errors[position] = f"expected a timestamp, got {describe_value(value)}"
    return result, errors


def _forms(texts: pd.Series, values: list[Any], errors: Errors) -> tuple[pd.Series, pd.Series]:
    """Which texts are of a supported form, and which of those carry an offset; an unusual spelling
    is normalised in `texts`, and a text that is refused gets its error. `texts` is a `str` column,
    whose matches say False for a missing text."""
    has_text = texts.notna()
    if texts.str.fullmatch(_BOTS_FORM).eq(has_text).all():
        return has_text, pd.Series(False, index=texts.index)
    formed = texts.str.fullmatch(_FORM)
    for position in (has_text & ~formed).to_numpy().nonzero()[0].tolist():
        errors[position] = _unsupported_form(values[position])
    for position in (formed & texts.str.contains(_UNUSUAL)).to_numpy().nonzero()[0].tolist():
        text, reason = _normalised(values[position])
        if reason:
            errors[position] = reason
            formed.iat[position] = False
        else:
            texts.iat[position] = text
    aware = formed & texts.str.contains(_HAS_OFFSET) & ~texts.str.fullmatch(_DATE_ONLY)
    return formed, aware


def _unsupported_form(text: str) -> str:
    return (
        f"{describe_value(text)} is not a supported timestamp form: expected ISO 8601 "
        "YYYY-MM-DD[Thh:mm[:ss[.ffffff]]] with an optional offset Z or +hh:mm, nothing around it"
    )


def _normalised(text: str) -> tuple[str, str | None]:
    """The same instant spelled as pandas reads it (`T`, `.`, at most 6 fraction digits), or why
    it cannot be: fraction digits beyond microseconds that are not zeros would be rounded away."""
    original, text = text, text[:10] + text[10:11].upper() + text[11:].replace("z", "Z")
    fraction = _FRACTION.search(text)
    if fraction is None:
        return text, None
    digits = fraction.group(1)
    if digits[FRACTION_DIGITS:].strip("0"):
        return text, (
            f"timestamp {describe_value(original)} has more precision than the column holds (microseconds): "
            "rounding would change the value"
        )
    kept = "." + digits[:FRACTION_DIGITS]  # `[0-9]+`: at least one digit
    return text[: fraction.start()] + kept + text[fraction.end() :], None


_SAFE_LOCAL = (pd.Timestamp("0001-01-02"), pd.Timestamp("9999-12-30"))
_EPOCH_RANGE = (Decimal(-62135596800), Decimal("253402300799.999999"))  # 0001-01-01 to 9999-12-31T23:59:59.999999


def _localized_at_the_edge(local: pd.Timestamp, source_timezone: str) -> pd.Timestamp:
    """A naive time in the first or last day of years 1-9999 (or beyond them) as a UTC instant,
    which the range check then judges; NaT when the local time is ambiguous."""
    if not YEARS[0] <= local.year <= YEARS[1]:
        return local.tz_localize("UTC")
    moment = local.to_pydatetime()
    zone = ZoneInfo(source_timezone)
    offsets = {moment.replace(fold=fold, tzinfo=zone).utcoffset() for fold in (0, 1)}
    if len(offsets) > 1:
        return pd.NaT
    return (local - pd.Timedelta(offsets.pop())).tz_localize("UTC")


def _beyond(instant: pd.Timestamp) -> str:
    return (
        f"in year {instant.year} in UTC: the target holds years {YEARS[0]} to {YEARS[1]} only "
        "(PostgreSQL writes no year 0; the bot's datetimes end at 9999)"
    )


def _timestamp_failure(text: str, original: str, source_timezone: str) -> str:
    """Say why a string of a supported form (`text`, normalised from `original`) is no instant."""
    offset = _OFFSET_PARTS.search(text, len("YYYY-MM-DDT"))
    if offset and (int(offset[1]) > 23 or int(offset[2] or 0) > 59):  # Python reads "+00:60" as +01:00
        return (f"impossible UTC offset in {describe_value(original)}: its hours must be in 0..23 and its "
                "minutes in 0..59")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        detail = str(exc)
        if "out of range" in detail or "must be in" in detail:
            return f"impossible date {describe_value(original)}: {detail}"
        return f"unparseable timestamp {describe_value(original)}"
    if parsed.tzinfo is None:
        zone = ZoneInfo(source_timezone)
        folds = {parsed.replace(fold=f, tzinfo=zone).utcoffset() for f in (0, 1)}
        if len(folds) > 1:
            return f"{describe_value(original)} is ambiguous or does not exist in {source_timezone} (DST change)"
    return f"timestamp {describe_value(original)} is out of the supported range"
