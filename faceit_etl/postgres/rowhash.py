"""One canonical text per row, and PostgreSQL's `hashtextextended(text, 0)` of it computed in numpy.

The content check hashes each row on both sides, the table's in SQL and the frame's here, and
compares the sums: equal sums mean equal rows without reading the table back. Summing (not XOR)
keeps duplicates: a row present twice adds its hash twice.

A row's text is its cells one after another, each one self-delimiting, so two different rows never
give the same text: a NULL is `N`, a cell whose value may be anything is `*`, and a value is its
length in bytes, `:`, then its text. Values are written as PostgreSQL's `::text` writes them:
integers in decimal, booleans as `true`/`false`, timestamps as epoch microseconds (no time zone
in play), text as its UTF-8 bytes.

`hashtextextended` is Bob Jenkins' lookup3 over the text's bytes (PostgreSQL's `hash_bytes_extended`),
fixed because hash partitioning stores its results; as the server computes it, it reads words
little-endian. On a big-endian server the sums never agree and the check compares row by row.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

NULL, ANY = "N", "*"
_BATCH = 16_384  # rows hashed at once: bounds the padded byte matrix (rows x longest text)


def cell(value: pa.Array, any_value: np.ndarray | None = None) -> pa.Array:
    """The canonical text of one column's cells (strings, integers, booleans; timestamps as epoch
    microseconds beforehand); `any_value` marks the cells whose value may be anything."""
    text = value if pa.types.is_string(value.type) or pa.types.is_large_string(value.type) else pc.cast(value, pa.string())
    text = pc.cast(text, pa.large_string())
    length = pc.cast(pc.binary_length(text), pa.large_string())
    out = pc.if_else(pc.is_null(text), pa.scalar(NULL, pa.large_string()), pc.binary_join_element_wise(length, text, pa.scalar(":", pa.large_string())))
    if any_value is not None:
        out = pc.if_else(pa.array(any_value, pa.bool_()), pa.scalar(ANY, pa.large_string()), out)
    return out


def row_text(cells: list[pa.Array]) -> pa.Array:
    """The cells of each row joined into its canonical text."""
    return pc.binary_join_element_wise(*cells, pa.scalar("", pa.large_string()))


def sql_cell(value: sql.Composable, any_value: sql.Composable | None = None) -> sql.Composable:
    """`cell` in SQL: `value` an expression of type text, `any_value` a boolean expression."""
    text = sql.SQL("CASE WHEN ({v}) IS NULL THEN {null} ELSE octet_length({v})::text || ':' || ({v}) END").format(
        v=value, null=sql.Literal(NULL)
    )
    if any_value is None:
        return text
    return sql.SQL("CASE WHEN {} THEN {} ELSE {} END").format(any_value, sql.Literal(ANY), text)


def sql_row_hash(cells: list[sql.Composable]) -> sql.Composable:
    return sql.SQL("hashtextextended({}, 0)").format(sql.SQL(" || ").join(cells))


def hash_texts(texts: pa.Array) -> np.ndarray:
    """`hashtextextended(text, 0)` of each string, as the int64 PostgreSQL returns."""
    texts = pc.cast(texts, pa.large_string())
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if texts.null_count:
        raise ValueError("a canonical row text is never NULL")
    _, offsets, data = texts.buffers()
    offsets = np.frombuffer(offsets, dtype=np.int64)[texts.offset : texts.offset + len(texts) + 1]
    data = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    out = np.empty(len(texts), dtype=np.uint64)
    order = np.argsort(-lengths, kind="stable")  # longest first: each block's rows are a prefix
    for first in range(0, len(order), _BATCH):
        rows = order[first : first + _BATCH]
        out[rows] = _lookup3(data, starts[rows], lengths[rows])
    return out.view(np.int64)


def hash_sum(hashes: np.ndarray) -> int:
    """The exact sum of int64 hashes, as PostgreSQL's `sum(bigint)` (numeric) gives it."""
    hashes = hashes.astype(np.int64, copy=False)
    return int(np.sum(hashes >> 32)) * (1 << 32) + int(np.sum(hashes & 0xFFFFFFFF))


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


def _lookup3(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """hash_bytes_extended(seed 0) of each row's bytes, rows ordered longest first."""
    n = len(starts)
    blocks = lengths // 12  # full 12-byte blocks mixed; the rest (0 to 11 bytes) is the tail
    width = (int(blocks.max(initial=0)) + 1) * 12
    padded = np.zeros((n, width), dtype=np.uint8)
    total = int(lengths.sum())
    row = np.repeat(np.arange(n), lengths)
    position = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    padded[row, position] = data[np.repeat(starts, lengths) + position]
    words = padded.view("<u4")
    a = (np.uint32(0x9E3779B9 + 3923095) + lengths.astype(np.uint32)).astype(np.uint32)
    b, c = a.copy(), a.copy()
    for block in range(int(blocks.max(initial=0))):
        k = int(np.count_nonzero(blocks > block))  # a prefix: rows are ordered longest first
        a[:k] += words[:k, 3 * block]
        b[:k] += words[:k, 3 * block + 1]
        c[:k] += words[:k, 3 * block + 2]
        _mix(a[:k], b[:k], c[:k])
    everyone = np.arange(n)
    a += words[everyone, 3 * blocks]
    b += words[everyone, 3 * blocks + 1]
    c += words[everyone, 3 * blocks + 2] << np.uint32(8)  # the tail's lowest byte of c is the length's
    _final(a, b, c)
    return (b.astype(np.uint64) << np.uint64(32)) | c.astype(np.uint64)
