"""PostgreSQL's `hash_record_extended(ROW(...), 0)` of each row, computed in numpy on the frames.

The content check hashes each row on both sides, the table's in SQL and the frame's here, and
compares the sums: equal sums mean equal rows without reading the table back. Summing (not XOR)
keeps duplicates: a row present twice adds its hash twice.

The record hash is the one hash partitioning stores, so it does not change between versions:
per cell the type's extended hash (seed 0; a NULL is 0), combined as `result * 31 + cell`. Cells
are hashed as their type does: integers (int4 and int8 agree on int4's values) and timestamps
(microseconds since 2000-01-01) through `hashint8extended`, booleans through `hashcharextended`,
text through `hashtextextended`, Bob Jenkins' lookup3 over its UTF-8 bytes. The server reads the
bytes as words in its own byte order: on a big-endian server the sums never agree, and the check
compares row by row.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_INIT = 0x9E3779B9 + 3923095  # lookup3's initial state, before the length is added
_PG_EPOCH_MICROS = 946_684_800_000_000  # 2000-01-01 in Unix microseconds: PostgreSQL's timestamp zero
_TAIL_MASK = np.array([0, 0xFF, 0xFFFF, 0xFFFFFF, 0xFFFFFFFF], dtype=np.uint32)  # by bytes of a word kept
_BATCH = 1 << 18  # rows of text hashed at once: bounds the four shifted copies of their bytes


def combine(cells: list[np.ndarray]) -> np.ndarray:
    """The record hash from its cells' hashes (uint64, 0 for NULL), in column order: at least one
    column, as each table has."""
    result = np.zeros(len(cells[0]), dtype=np.uint64)
    for cell in cells:
        result *= np.uint64(31)
        result += cell
    return result


def hash_int8(values: np.ndarray) -> np.ndarray:
    """`hashint8extended(v, 0)`: the halves folded into 32 bits (as int4 does), then hashed."""
    values = values.astype(np.int64, copy=False)
    low = values.astype(np.uint32)
    high = (values >> 32).astype(np.uint32)
    return hash_uint32(low ^ np.where(values >= 0, high, ~high))


def hash_timestamp(unix_micros: np.ndarray) -> np.ndarray:
    return hash_int8(unix_micros.astype(np.int64, copy=False) - _PG_EPOCH_MICROS)


def hash_bool(values: np.ndarray) -> np.ndarray:
    return hash_uint32(values.astype(np.uint32))


def hash_uint32(keys: np.ndarray) -> np.ndarray:
    """`hash_bytes_uint32_extended(k, 0)`."""
    a = np.full(len(keys), _INIT + 4, dtype=np.uint32)
    b, c = a.copy(), a.copy()
    a += keys.astype(np.uint32, copy=False)
    _final(a, b, c)
    return _result(b, c)


def hash_text(texts: pa.Array) -> np.ndarray:
    """`hashtextextended(t, 0)` of each string (a NULL's is meaningless: the caller zeroes it)."""
    texts = pc.cast(texts, pa.large_string())
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    _, offsets, data = texts.buffers()
    offsets = np.frombuffer(offsets, dtype=np.int64)[texts.offset : texts.offset + len(texts) + 1]
    data = np.frombuffer(data, dtype=np.uint8)  # present, if of 0 bytes: Arrow refuses a string array without one
    out = np.empty(len(texts), dtype=np.uint64)
    for first in range(0, len(texts), _BATCH):
        bounds = offsets[first : first + _BATCH + 1]
        base = int(bounds[0])
        chunk = np.zeros(int(bounds[-1]) - base + 16, dtype=np.uint8)  # zeros past the end: tails read them
        chunk[: len(chunk) - 16] = data[base : int(bounds[-1])]
        words = (len(chunk) - 3) // 4
        # shifted[k][i]: the little-endian word at byte 4i + k, so a word at any byte is one lookup
        shifted = np.stack([np.frombuffer(chunk, dtype="<u4", count=words, offset=k) for k in range(4)])
        out[first : first + len(bounds) - 1] = _lookup3(shifted, bounds[:-1] - base, np.diff(bounds))
    return out


def to_int64(hashes: np.ndarray) -> np.ndarray:
    """As PostgreSQL returns them: bigint."""
    return hashes.astype(np.uint64, copy=False).view(np.int64)


def hash_sum(hashes: np.ndarray) -> int:
    """The exact sum of the hashes as bigints, as PostgreSQL's `sum(bigint)` (numeric) gives it."""
    signed = to_int64(hashes)
    return int(np.sum(signed >> 32)) * (1 << 32) + int(np.sum(signed & 0xFFFFFFFF))


def _rot(x: np.ndarray, k: int) -> np.ndarray:
    return (x << np.uint32(k)) | (x >> np.uint32(32 - k))


def _mix(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
    """lookup3's mix(), in place (the arrays may be views)."""
    for x, y, z, k in ((a, c, b, 4), (b, a, c, 6), (c, b, a, 8), (a, c, b, 16), (b, a, c, 19), (c, b, a, 4)):
        x -= y
        x ^= _rot(y, k)
        y += z


def _final(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
    for x, y, k in ((c, b, 14), (a, c, 11), (b, a, 25), (c, b, 16), (a, c, 4), (b, a, 14), (c, b, 24)):
        x ^= y
        x -= _rot(y, k)


def _result(b: np.ndarray, c: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint64) << np.uint64(32)) | c.astype(np.uint64)


def _lookup3(shifted: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """hash_bytes_extended(seed 0) of each string at `starts` with `lengths` in the shifted words."""
    order = np.argsort(-lengths, kind="stable")  # longest first: each block's strings are a prefix
    starts, lengths = starts[order].astype(np.int64), lengths[order].astype(np.int64)
    blocks = lengths // 12  # full 12-byte blocks mixed; the rest (0 to 11 bytes) is the tail

    def word(at: np.ndarray) -> np.ndarray:
        return shifted[at & 3, at >> 2]

    a = (np.uint32(_INIT) + lengths.astype(np.uint32)).astype(np.uint32)
    b, c = a.copy(), a.copy()
    for block in range(int(blocks.max(initial=0))):
        k = int(np.count_nonzero(blocks > block))
        at = starts[:k] + 12 * block
        a[:k] += word(at)
        b[:k] += word(at + 4)
        c[:k] += word(at + 8)
        _mix(a[:k], b[:k], c[:k])
    tail = lengths - 12 * blocks
    at = starts + 12 * blocks
    a += word(at) & _TAIL_MASK[np.clip(tail, 0, 4)]
    b += word(at + 4) & _TAIL_MASK[np.clip(tail - 4, 0, 4)]
    c += (word(at + 8) & _TAIL_MASK[np.clip(tail - 8, 0, 4)]) << np.uint32(8)  # c's lowest byte: the length's
    _final(a, b, c)
    out = np.empty(len(order), dtype=np.uint64)
    out[order] = _result(b, c)
    return out
