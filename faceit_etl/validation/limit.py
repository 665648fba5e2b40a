"""`max_rejects`: how many rejected entries a run may have and still load the rest.

A count (`5`) or a percentage of the entries read (`1%`, `0.5%`). The share is computed exactly
(no float rounding): `1%` of 250 entries allows 2 rejects, of 300 allows 3. `force` lifts the limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

_COUNT = re.compile(r"[0-9]+")
_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]+)?)%")
# The failure metadata key of a run its rejects stopped: the check's own result already says why.
STOPPED_BY = "stopped_by"
EXPECTED = "expected a whole number of rejects (5) or a percentage of the entries read (1%), at least 0"


@dataclass(frozen=True)
class RejectLimit:
    text: str  # as the operator wrote it, normalised: "5", "1%"
    count: int | None = None
    percent: Fraction | None = None

    def allowed(self, entries_read: int) -> int:
        """The most rejects a run of `entries_read` entries may have and still load."""
        if self.count is not None:
            return self.count
        return int(self.percent * entries_read / 100)  # Fraction → int truncates: never above the share

    def allows(self, rejected: int, entries_read: int) -> bool:
        return rejected <= self.allowed(entries_read)


def parse_max_rejects(text: str) -> RejectLimit:
    """The limit a `max_rejects` value means; ValueError (saying what is expected) for anything else:
    a sign, a fraction of a reject, a share above 100 %, words."""
    value = str(text)  # as written: " 3" is refused like any other text that is no count
    if _COUNT.fullmatch(value):
        return RejectLimit(str(int(value)), count=int(value))
    if matched := _PERCENT.fullmatch(value):
        percent = Fraction(matched.group(1))
        if percent > 100:
            raise ValueError("a percentage of the entries read is at most 100%")
        return RejectLimit(value, percent=percent)
    raise ValueError(EXPECTED)
