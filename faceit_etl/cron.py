"""Why a cron schedule is refused, in words that name the field and its range.

Dagster alone decides what it accepts (its vendored croniter, exactly 5 fields, no 30th or 31st of
February), so nothing here accepts or refuses: for an expression Dagster refused, it says which part
to change ("minute 61 is out of 0-59"). What croniter accepts beyond plain numbers (names, `L`, `#`,
`?`) is read as valid, so that the fault named is one Dagster minds too.
"""

from __future__ import annotations

from dataclasses import dataclass

NAMED_SCHEDULES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
SHAPE = (
    "minute hour day-of-month month day-of-week, e.g. '0 3 * * *', "
    f"or one of {', '.join(NAMED_SCHEDULES)}"
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # words croniter reads as numbers, from `low` on

    def value(self, text: str) -> int | None:
        """The number a value stands for (a name counts from `low`); None when it is neither."""
        if text.isascii() and text.isdigit():
            return int(text)
        return self.names.index(text) + self.low if text in self.names else None


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day-of-week", 0, 7, _DAYS),  # 0 and 7 are both Sunday
)


def cron_fault(text: str) -> str:
    """Why Dagster refuses `text` as a cron schedule: the first field, value or step at fault, with its range."""
    if text.strip().lower() in NAMED_SCHEDULES:
        return f"{text.strip()} takes nothing around it"
    if text.strip().startswith("@"):
        return f"{text.strip()} is no schedule name Dagster knows: {', '.join(NAMED_SCHEDULES)}"
    fields = text.split()
    if len(fields) != 5:
        extra = " (Dagster takes no seconds or year field)" if len(fields) in (6, 7) else ""
        return f"{len(fields)} field(s){extra}; a cron schedule has 5: {SHAPE}"
    for field, written in zip(_FIELDS, fields):
        for item in written.split(","):
            fault = _item_fault(field, item, item.lower())
            if fault:
                return fault
    day, month = fields[2].lower(), fields[3].lower()
    if month in ("2", "feb") and day in ("30", "31"):
        return f"day-of-month {day} of month {fields[3]} never comes: February has at most 29 days"
    return f"Dagster's cron parser refuses it ({SHAPE})"


def _item_fault(field: _Field, item: str, lower: str) -> str | None:
    """What is wrong with one comma-separated part of a field, or None."""
    if lower == "?" and field.name in ("day-of-month", "day-of-week"):
        return None
    if lower == "l" and field.name == "day-of-month":  # the month's last day
        return None
    if field.name == "day-of-week":
        if "#" in lower:  # the n-th such weekday of the month
            day, _, nth = lower.partition("#")
            if not (nth.isascii() and nth.isdigit()):
                return f"day-of-week {item!r}: the week's number after # is no number"
            if not 1 <= int(nth) <= 5:
                return f"day-of-week {item!r}: the week's number {int(nth)} is out of 1-5"
            return _value_fault(field, day, item)
        if lower.startswith("l") and len(lower) > 1:  # the month's last such weekday
            return _value_fault(field, lower[1:], item)
    base, slash, step = lower.partition("/")
    if slash:
        if not (step.isascii() and step.isdigit()):
            return f"{field.name} step {step!r} is no number"
        if int(step) == 0:
            return f"{field.name} step 0 repeats nothing: a step is at least 1"
    if base == "*":
        return None
    start, dash, end = base.partition("-")
    if dash and end == "l" and field.name == "day-of-month":  # up to the month's last day
        return _value_fault(field, start, item)
    return _value_fault(field, start, item) or (_value_fault(field, end, item) if dash else None)


def _value_fault(field: _Field, value: str, item: str) -> str | None:
    number = field.value(value)
    if number is None:
        names = f", or a name {field.names[0]}-{field.names[-1]}" if field.names else ""
        return (f"{field.name} {item!r} is not a number {field.low}-{field.high}{names}, "
                "a range a-b, a list a,b or a step */n")
    if not field.low <= number <= field.high:
        return f"{field.name} {number} is out of {field.low}-{field.high}"
    return None
