"""Deterministic bot files for tests and benchmarks: every layout the bot wrote, any size and seed.

The samples hold 25 users; the pipeline has to be exercised on a million, with the shapes real
files have: Telegram ids beyond 2^31, referrers later in the file or missing from it, users
without a FACEIT account, timestamps with and without microseconds, lower-case tiers. Same
(n, seed, layout) → same bytes, so a failing run can be reproduced exactly. Pure Python and
orjson: no pandas, no Dagster, cheap to import and to run from the command line:

    python -m faceit_etl.generate data.json --users 1000000 [--seed 0] [--layout nested]
"""

from __future__ import annotations

import argparse
import gc
import random
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson

LAYOUTS = ("nested", "flat", "first")
MAX_TELEGRAM_ID = 8_000_000_000

# Shares: what a real file of the bot looks like.
TIER_SHARES = {"free": 0.70, "premium": 0.20, "pro": 0.10}  # lower case, as the bot writes them
REFERRED_SHARE = 0.30
ABSENT_REFERRER_SHARE = 0.15  # of the referred: their referrer is not in the file
NO_FACEIT_SHARE = 0.25
REFERRAL_CODE_SHARE = 0.60
LAST_ACTIVE_NULL_SHARE = 0.30
MICROSECONDS_SHARE = 0.60
LANGUAGES = ("ru",) * 6 + ("en",) * 3 + ("uk",) * 2 + ("kk", "be", "de", "pl", "pt-BR")
NICKNAMES = ("s1mple", "ZywOo", "m0NESY", "donk", "NiKo", "sh1ro", "Геннадий", "ropz",
             "b1t", "electroNic", "Ax1Le", "jL", "Олег_К", "frozen", "Twistzz", "ELiGE", "ß-Ünïcødé")
DAILY_LIMIT = {"free": 10, "premium": 100, "pro": 1000}
PAYMENT_METHODS = ("telegram_stars",) * 4 + ("referral_bonus",)

_FIRST_DAY = date(2024, 1, 1)
_DAYS = 700  # created_at falls in 2024-01-01 .. 2025-11-30; later times up to ~120 days after
_DAY_TEXT = [(_FIRST_DAY + timedelta(days=d)).isoformat() for d in range(_DAYS + 130)]
_CLOCK = [f"T{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)]
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}
# Per-user fields that depend on nothing else are drawn as one "profile" from a pool: one random
# draw per user instead of six. The pool is large enough for the shares to hold to ~1 %.
_POOL = 1 << 13


def generate_users(n: int, seed: int = 0, layout: str = "nested") -> list[dict[str, Any]]:
    """`n` user entries as the bot writes them, in one of its three layouts.

    Columns are drawn in a fixed order (the first layout's fields, then the flat layout's, then
    the subscription's), so one seed gives the same users in every layout. Built column-wise
    with comprehensions: a million users must take seconds.
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
    # Drawn first: the number of ids to draw depends on it.
    kinds = [(2 if r() < ABSENT_REFERRER_SHARE or n < 2 else 1) if r() < REFERRED_SHARE else 0 for _ in every]
    ids = [i + 1 for i in _distinct(rng, n + kinds.count(2), MAX_TELEGRAM_ID)]
    absent_ids = iter(ids[n:])  # unique too, so an absent referrer is never a user of the file
    del ids[n:]

    faceit = [r() >= NO_FACEIT_SHARE for _ in every]
    players = _uuids(rng, faceit.count(True))
    player_ids = [next(players) if has else None for has in faceit]
    nicknames = [f"{NICKNAMES[int(r() * len(NICKNAMES))]}{i}" if has else None for i, has in enumerate(faceit)]
    checked = [has and r() < 0.4 for has in faceit]
    match_ids = _uuids(rng, checked.count(True))
    matches = [f"1-{next(match_ids)}" if c else None for c in checked]
    if layout == "first":
        return [
            {"user_id": a, "faceit_player_id": b, "faceit_nickname": c, "last_checked_match_id": d}
            for a, b, c, d in zip(ids, player_ids, nicknames, matches)
        ]

    clock = _clock_pool(rng)
    with_account, without_account = _user_pool(rng, clock, 0.0), _user_pool(rng, clock, 0.5)
    created_days = [int(r() * _DAYS) for _ in every]
    profiles = [(with_account if has else without_account)[int(r() * _POOL)] for has in faceit]
    if layout == "flat":
        return [
            {"user_id": a, "faceit_player_id": b, "faceit_nickname": c, "last_checked_match_id": d,
             "waiting_for_nickname": waiting, "language": language, "notifications_enabled": notify,
             "created_at": _DAY_TEXT[day] + created_clock,
             "last_active_at": None if active_after is None else _DAY_TEXT[day + active_after] + active_clock,
             "total_requests": requests}
            for a, b, c, d, day, (waiting, language, notify, requests, created_clock, active_after, active_clock)
            in zip(ids, player_ids, nicknames, matches, created_days, profiles)
        ]

    last = n - 1
    referrers = [
        None if k == 0 else next(absent_ids) if k == 2 else ids[j + 1 if (j := int(r() * last)) >= i else j]
        for i, k in enumerate(kinds)
    ]
    referrals = Counter(referrers)  # counts None too, which no user id asks for
    with_code = [r() < REFERRAL_CODE_SHARE for _ in every]
    codes = iter(_distinct(rng, with_code.count(True), 1 << 32))  # never a clash
    subscription_pool = _subscription_pool(rng, clock)
    subscriptions = [
        {
            "tier": tier,
            "expires_at": None if expires_after is None else _DAY_TEXT[day + expires_after] + expires_clock,
            "auto_renew": auto_renew,
            "payment_method": payment_method,
            "daily_requests": daily_requests,
            "last_reset_date": None if reset_after is None else _DAY_TEXT[day + reset_after] + reset_clock,
            "referred_by": referrer,
            "referral_code": f"{next(codes):08X}" if code else None,
            "referrals_count": referrals.get(user_id, 0),
        }
        for user_id, day, referrer, code in zip(ids, created_days, referrers, with_code)
        for (tier, expires_after, expires_clock, auto_renew, payment_method, daily_requests, reset_after,
             reset_clock) in [subscription_pool[int(r() * _POOL)]]
    ]
    # Key order as the bot's pydantic model of that era writes it.
    return [
        {"user_id": a, "faceit_player_id": b, "faceit_nickname": c, "last_checked_match_id": d,
         "waiting_for_nickname": waiting, "subscription": subscription, "language": language,
         "notifications_enabled": notify, "created_at": _DAY_TEXT[day] + created_clock,
         "last_active_at": None if active_after is None else _DAY_TEXT[day + active_after] + active_clock,
         "total_requests": requests}
        for a, b, c, d, day, subscription, (waiting, language, notify, requests, created_clock, active_after,
                                            active_clock)
        in zip(ids, player_ids, nicknames, matches, created_days, subscriptions, profiles)
    ]


def _distinct(rng: random.Random, count: int, size: int) -> list[int]:
    """`count` distinct integers in [0, size), in draw order. Like random.sample, at a third of its
    cost when `count` is far below `size`: draw, drop the rare repeats, draw again for them."""
    if count > size // 4:
        return rng.sample(range(size), count)
    r = rng.random
    seen = dict.fromkeys([int(r() * size) for _ in range(count)])
    while len(seen) < count:
        seen.setdefault(int(r() * size))
    return list(seen)


def _uuids(rng: random.Random, count: int) -> Iterator[str]:
    """`count` version-4 UUID texts cut from one block of random bytes (uuid.uuid4() is ~4x slower)."""
    h = rng.randbytes(16 * count).hex()
    return iter([
        f"{h[o:o + 8]}-{h[o + 8:o + 12]}-4{h[o + 13:o + 16]}-{_VARIANT[h[o + 16]]}{h[o + 17:o + 20]}-{h[o + 20:o + 32]}"
        for o in range(0, 32 * count, 32)
    ])


def _clock_pool(rng: random.Random) -> list[str]:
    """Times of day as `isoformat()` writes them: a share with microseconds, the others without
    (isoformat() omits a zero fraction, so a fraction is 1..999999 or nothing)."""
    r = rng.random
    return [
        _CLOCK[int(r() * 86_400)] + (f".{int(r() * 999_999) + 1:06d}" if r() < MICROSECONDS_SHARE else "")
        for _ in range(_POOL)
    ]


def _user_pool(rng: random.Random, clock: list[str], waiting_share: float) -> list[tuple]:
    """(waiting_for_nickname, language, notifications_enabled, total_requests, created_at clock,
    days from created_at to last_active_at or None, last_active_at clock)."""
    r = rng.random
    return [
        (
            r() < waiting_share,
            LANGUAGES[int(r() * len(LANGUAGES))],
            r() < 0.9,
            int(r() * 500),
            clock[int(r() * _POOL)],
            None if r() < LAST_ACTIVE_NULL_SHARE else 1 + int(r() * 100),
            clock[int(r() * _POOL)],
        )
        for _ in range(_POOL)
    ]


def _subscription_pool(rng: random.Random, clock: list[str]) -> list[tuple]:
    """(tier, days from created_at to expires_at or None, its clock, auto_renew, payment_method,
    daily_requests, days to last_reset_date or None, its clock). Free tiers neither expire nor pay."""
    r = rng.random
    pool = []
    for _ in range(_POOL):
        draw = r()
        tier = "free" if draw < TIER_SHARES["free"] else "pro" if draw >= 1 - TIER_SHARES["pro"] else "premium"
        paid = tier != "free"
        pool.append((
            tier,
            30 + int(r() * 90) if paid else None,
            clock[int(r() * _POOL)],
            paid and r() < 0.5,
            PAYMENT_METHODS[int(r() * len(PAYMENT_METHODS))] if paid else None,
            int(r() * (DAILY_LIMIT[tier] + 1)),
            int(r() * 100) if r() < 0.8 else None,
            clock[int(r() * _POOL)],
        ))
    return pool


def write_data_file(path: str | Path, n: int, seed: int = 0, layout: str = "nested") -> Path:
    """Write `{"users": [...], "analytics": {...}}` as the bot does: pretty-printed UTF-8."""
    path = Path(path)
    users = generate_users(n, seed, layout)
    analytics = {"total_users": n, "daily_stats": {}}
    enabled = gc.isenabled()
    gc.disable()
    try:
        with path.open("wb") as out:
            for part in _document_parts(users, analytics):
                out.write(part)
    finally:
        if enabled:
            gc.enable()
    return path


def _document_parts(users: list[dict[str, Any]], analytics: dict[str, Any], chunk: int = 20_000) -> Iterator[bytes]:
    """The bytes of one orjson.dumps(document, OPT_INDENT_2), made a chunk of users at a time:
    twice as fast at a million users (no 700 MB buffer to fault in) and the very same bytes."""
    whole = orjson.dumps({"users": [], "analytics": analytics}, option=orjson.OPT_INDENT_2)
    if not users:
        yield whole
        return
    head, foot = b'{\n  "users": [\n', b"\n  ]\n}"
    for offset in range(0, len(users), chunk):
        part = orjson.dumps({"users": users[offset : offset + chunk]}, option=orjson.OPT_INDENT_2)
        yield (head if offset == 0 else b",\n") + part[len(head) : -len(foot)]
    yield b"\n  ]" + whole[whole.index(b",\n") :]


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
