"""Find whether a JSON text may hold a number with a point or an exponent, without parsing it.

orjson turns such a number into the nearest binary float and forgets its text:
`253402300799.999999` (9999-12-31T23:59:59.999999 in epoch seconds) becomes 253402300800.0, a
moment of year 10000, and `5.00000000000000000001` becomes the whole number 5. A text that may hold
one is read by the standard parser, which keeps each such number with its text (`WrittenFloat`).
The bot writes none, so its files keep the fast parse.

Outside strings such a number is a run of `0-9 + - . e E` with a digit before its point or
exponent, and a value's end after it (whitespace, `,`, `]` or `}`). A timestamp's fraction in a
string ends at a quote, offset or `Z`, so it does not count; text in a string that looks like a
number does (`"v1.5 pro"`): a false alarm costs speed only, a number is never missed.
"""

from __future__ import annotations

import numpy as np

_CHUNK = 1 << 18
_WIDTHS = (10, 40)  # bytes looked at from a point or exponent for its number's end
_WINDOW = _WIDTHS[-1]
_NUMBER = np.zeros(256, dtype=bool)
_NUMBER[list(b"0123456789+-.eE")] = True
_VALUE_END = np.zeros(256, dtype=bool)
_VALUE_END[list(b" \t\r\n,]}")] = True


def may_hold_decimal_number(raw) -> bool:
    """Whether `raw` (bytes, or anything sliced into bytes) may hold a JSON number with a point or
    an exponent outside its strings; never False when it does."""
    for start in range(0, len(raw), _CHUNK):
        # a chunk's points and exponents, the next chunk's first byte too; the rest only ends them
        chunk = np.frombuffer(raw[start : start + _CHUNK + 1 + _WINDOW], dtype=np.uint8)
        head = chunk[: _CHUNK + 1]
        digit = (head[:-1] - np.uint8(ord("0"))) < 10  # bytes below "0" wrap around to >= 208
        after = head[1:]
        marks = np.flatnonzero(digit & ((after == ord(".")) | ((after | 0x20) == ord("e")))) + 1
        if not marks.size:
            continue
        for width in _WIDTHS:  # most numbers end within a few bytes: only the others are looked at further
            ahead = chunk[np.minimum(marks[:, None] + np.arange(1, width + 1), len(chunk) - 1)]
            ends = ~_NUMBER[ahead]
            found = ends.any(axis=1)
            if _VALUE_END[ahead[found, ends[found].argmax(axis=1)]].any():
                return True
            marks = marks[~found]
            if not marks.size:
                break
        else:  # a number longer than the widest look may be one
            return True
    return False
