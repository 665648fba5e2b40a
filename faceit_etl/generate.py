"""Deterministic bot data files for tests and benchmarks (BRIEF §1 layouts), any size, any seed.

The samples hold 25 users; the pipeline has to be exercised on a million, with the shapes real
files have: Telegram ids beyond 2^31, referrers later in the file or missing from it, users
without a FACEIT account, timestamps with and without microseconds. Same (n, seed, layout) →
same bytes, so a failing run can be reproduced exactly. Pure Python and orjson: no pandas,
no Dagster, so it is cheap to import and to run from the command line.
"""

from __future__ import annotations

import argparse
import gc
import random
from collections import Counter
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson

LAYOUTS = ("nested", "flat", "first")
MAX_TELEGRAM_ID = 8_000_000_000

# Shares (BRIEF §1 and the task): what a real file of the bot looks like.
REFERRED_SHARE = 0.30
ABSENT_REFERRER_SHARE = 0.15  # of the referred: their referrer is not in the file
NO_FACEIT_SHARE = 0.25
REFERRAL_CODE_SHARE = 0.60
LAST_ACTIVE_NULL_SHARE = 0.30
MICROSECONDS_SHARE = 0.60
LANGUAGES = ("ru",) * 6 + ("en",) * 3 + ("uk",) * 2 + ("kk", "be", "de", "pl", "pt-BR")
NICKNAMES = ("s1mple", "ZywOo", "m0NESY", "donk", "NiKo", "sh1ro", "Геннадий", "ropz",
             "b1t", "electroNic", "Ax1Le", "jL", "Олег_К", "frozen", "Twistzz", "ELiGE")
DAILY_LIMIT = {"free": 10, "premium": 100, "pro": 1000}

_FIRST_DAY = date(2024, 1, 1)
_DAYS = 700  # created_at falls in 2024-01-01 .. ~2025-12
_SPAN = _DAYS * 86_400
_DAY_TEXT = [(_FIRST_DAY + timedelta(days=d)).isoformat() for d in range(_DAYS + 130)]
# Every second of a day as `THH:MM:SS`: formatting a million timestamps becomes two lookups.
_CLOCK = [f"T{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)]
_TIER_POOL = ("free",) * 7 + ("premium",) * 2 + ("pro",)  # 70 / 20 / 10 %
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def generate_users(n: int, seed: int = 0, layout: str = "nested") -> list[dict[str, Any]]:
    """`n` user entries as the bot writes them, in one of its three layouts.

    Columns are drawn in a fixed order (the first layout's fields, then the flat layout's, then
    the subscription's), so the same seed gives the same users in every layout: a file of one
    layout can be compared with another. Built column by column with comprehensions, as a
    million users must take seconds, not a minute.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}, expected one of {', '.join(LAYOUTS)}")
    if n < 0:
        raise ValueError("n must not be negative")
    enabled = gc.isenabled()
    gc.disable()  # a million live dicts make the cyclic GC rescan everything, for nothing
    try:
        return _generate(n, random.Random(seed), layout)
    finally:
        if enabled:
            gc.enable()


def _generate(n: int, rng: random.Random, layout: str) -> list[dict[str, Any]]:
    r: Callable[[], float] = rng.random
    every = range(n)

    # Referrals: 0 none, 1 another user of the file (earlier or later), 2 someone not in the file.
    kinds = [(2 if r() < ABSENT_REFERRER_SHARE or n < 2 else 1) if r() < REFERRED_SHARE else 0 for _ in every]
    # One draw for all ids keeps them unique, the file's and the absent referrers' alike.
    ids = rng.sample(range(1, MAX_TELEGRAM_ID + 1), n + kinds.count(2))
    absent_ids = iter(ids[n:])
    del ids[n:]

    faceit = [r() >= NO_FACEIT_SHARE for _ in every]
    uuids = _uuids(rng, n)
    player_ids = [u if has else None for u, has in zip(uuids, faceit)]
    nicknames = [f"{NICKNAMES[int(r() * len(NICKNAMES))]}{i}" if faceit[i] else None for i in every]
    match_uuids = _uuids(rng, n)
    matches = [f"1-{u}" if has and r() < 0.4 else None for u, has in zip(match_uuids, faceit)]
    if layout == "first":
        return [
            {"user_id": a, "faceit_player_id": b, "faceit_nickname": c, "last_checked_match_id": d}
            for a, b, c, d in zip(ids, player_ids, nicknames, matches)
        ]

    waiting = [not has and r() < 0.5 for has in faceit]
    languages = [LANGUAGES[int(r() * len(LANGUAGES))] for _ in every]
    notifications = [r() < 0.9 for _ in every]
    created_seconds = [int(r() * _SPAN) for _ in every]
    created = _texts(rng, created_seconds)
    active = _texts(rng, [None if r() < LAST_ACTIVE_NULL_SHARE else s + 86_400 + int(r() * 100 * 86_400)
                          for s in created_seconds])
    requests = [int(r() * 500) for _ in every]

    subscriptions: list[dict[str, Any] | None] = [None] * n
    if layout == "nested":
        referrers = [None if k == 0 else next(absent_ids) if k == 2 else _other(ids, i, r) for i, k in enumerate(kinds)]
        referrals = Counter(x for x in referrers if x is not None)
        with_code = [r() < REFERRAL_CODE_SHARE for _ in every]
        codes = iter(rng.sample(range(1 << 32), with_code.count(True)))  # distinct: never a clash
        tiers = [_TIER_POOL[int(r() * 10)] for _ in every]
        paid = [t != "free" for t in tiers]
        expires = _texts(rng, [s + (30 + int(r() * 90)) * 86_400 if p else None
                               for s, p in zip(created_seconds, paid)])
        resets = _texts(rng, [s + int(r() * 100 * 86_400) if r() < 0.8 else None for s in created_seconds])
        subscriptions = [
            {
                "tier": tier,
                "expires_at": expires_at,
                "auto_renew": p and r() < 0.5,
                "payment_method": ("telegram_stars" if r() < 0.8 else "referral_bonus") if p else None,
                "daily_requests": int(r() * (DAILY_LIMIT[tier] + 1)),
                "last_reset_date": reset,
                "referred_by": referrer,
                "referral_code": f"{next(codes):08X}" if code else None,
                "referrals_count": referrals.get(user_id, 0),
            }
            for user_id, tier, p, expires_at, reset, referrer, code
            in zip(ids, tiers, paid, expires, resets, referrers, with_code)
        ]

    users = []
    append = users.append
    for a, b, c, d, e, sub, f, g, h, i, j in zip(ids, player_ids, nicknames, matches, waiting, subscriptions,
                                               languages, notifications, created, active, requests):
        entry = {"user_id": a, "faceit_player_id": b, "faceit_nickname": c, "last_checked_match_id": d,
                 "waiting_for_nickname": e}
        if sub is not None:
            entry["subscription"] = sub
        entry["language"] = f
        entry["notifications_enabled"] = g
        entry["created_at"] = h
        entry["last_active_at"] = i
        entry["total_requests"] = j
        append(entry)
    return users


def _other(ids: list[int], i: int, r: Callable[[], float]) -> int:
    """Any user of the file but the i-th one, earlier or later."""
    j = int(r() * (len(ids) - 1))
    return ids[j + 1 if j >= i else j]


def _uuids(rng: random.Random, n: int) -> list[str]:
    """n version-4-shaped UUIDs from one block of random bytes (uuid.uuid4 per value is ~5x slower)."""
    h = rng.randbytes(16 * n).hex()
    return [
        f"{h[o:o + 8]}-{h[o + 8:o + 12]}-4{h[o + 13:o + 16]}-{_VARIANT[h[o + 16]]}{h[o + 17:o + 20]}-{h[o + 20:o + 32]}"
        for o in range(0, 32 * n, 32)
    ]


def _texts(rng: random.Random, seconds: list[int | None]) -> list[str | None]:
    """Naive `isoformat()` texts of seconds since the first day, some with microseconds, some without."""
    r = rng.random
    fractions = _fractions(rng)
    return [
        None if s is None
        else _DAY_TEXT[s // 86_400] + _CLOCK[s % 86_400] + (fractions[int(r() * 4096)] if r() < MICROSECONDS_SHARE else "")
        for s in seconds
    ]


def _fractions(rng: random.Random) -> list[str]:
    # isoformat() omits a zero fraction, so 1..999999.
    return [f".{int(rng.random() * 999_999) + 1:06d}" for _ in range(4096)]


def write_data_file(path: str | Path, n: int, seed: int = 0, layout: str = "nested") -> Path:
    """Write `{"users": [...], "analytics": {...}}` as the bot does (pretty-printed, UTF-8)."""
    path = Path(path)
    users = generate_users(n, seed, layout)
    document = {"users": users, "analytics": {"total_users": n, "daily_stats": {}}}
    enabled = gc.isenabled()
    gc.disable()
    try:
        path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    finally:
        if enabled:
            gc.enable()
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m faceit_etl.generate", description="Write a deterministic bot data file."
    )
    parser.add_argument("out", type=Path, help="file to write")
    parser.add_argument("--users", type=int, required=True, help="number of user entries")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layout", choices=LAYOUTS, default="nested")
    args = parser.parse_args(argv)
    written = write_data_file(args.out, args.users, args.seed, args.layout)
    print(f"{written}: {args.users} users, layout {args.layout}, seed {args.seed}")


if __name__ == "__main__":
    main()
