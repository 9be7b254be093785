"""The offline set at scale (issue 20): synthetic universes of issued cards, about 40 % valid.

For each size it prints, side by side:
  - the signed snapshot's size beside the information-theoretic lower bound for the same universe
    and k (target <= 1.15 x) and beside a plain sorted list of the valid keys' 64-bit hashes;
  - the build time (hashing, filter, exception list, packing, Ed25519 signature; target for
    10,000,000 cards <= 60 s). Reading the cards from the database is not in it;
  - that the set is exact over the whole universe, and the rate at which forged keys pass;
  - reader lookups per second: single (one card per call) and batched (target >= 1,000,000/s);
  - a day of changes (cards invalidated or re-validated, new cards issued): the bytes of one
    daily delta and of one delta per fetch interval, per changed card (target <= 30 bytes), and
    the time to verify and apply a day's deltas.

    .venv/bin/python bench/offline.py [--sizes 1000000,10000000] [--k 16] [--valid 0.4]
        [--changes-per-day N] [--fetch-minutes 1] [--seed 1]

Synthetic keys have the real shape (18-character id number, 32 hex-digit chip serial, expiry
date: 60 ASCII bytes). The default day's changes scale DOMAIN.md's "tens of millions of cards
invalidated a year" among 1.3 billion: about 1.3e-4 of the universe per day (both directions,
plus as many new cards).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from idguard.offline import fuse, sets, signing

BUILT_AT = dt.datetime(2026, 6, 15, 2, 0, tzinfo=dt.UTC)
TODAY = dt.date(2026, 6, 15)
KEYS = signing.SigningKeys({"bench": bytes(range(32))})
PUBLIC = {k.key_id: k.public_key for k in KEYS.public()}
_HEX = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)


def synthetic_keys(n: int, rng: np.random.Generator, start: int = 0) -> npt.NDArray[np.bytes_]:
    """n keys `NNNNNNNNNNNNNNNNNN|<32 hex>|YYYYMMDD`, distinct by their id part, as S64."""
    raw = np.zeros((n, fuse.KEY_BYTES), dtype=np.uint8)
    ids = np.arange(start, start + n, dtype=np.uint64) + np.uint64(110105190000000000)
    for d in range(18):
        raw[:, 17 - d] = (ids % np.uint64(10)).astype(np.uint8) + ord("0")
        ids //= np.uint64(10)
    raw[:, 18] = raw[:, 51] = ord("|")
    chip = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    raw[:, 19:51:2] = _HEX[chip >> 4]
    raw[:, 20:51:2] = _HEX[chip & 15]
    years = rng.integers(2027, 2046, size=n)
    for i, width in ((52, 4),):
        value = years.copy()
        for d in range(width):
            raw[:, i + width - 1 - d] = (value % 10).astype(np.uint8) + ord("0")
            value //= 10
    raw[:, 56:60] = np.frombuffer(b"0101", dtype=np.uint8)
    return raw.view(f"S{fuse.KEY_BYTES}").ravel()


def mib(n: float) -> str:
    return f"{n / 2**20:8.2f} MiB"


def run(n: int, args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    keys = synthetic_keys(n, rng)
    valid = rng.random(n) < args.valid
    r = int(valid.sum())
    print(f"\n== universe {n:,} cards, {r:,} valid ({r / n:.0%}), k = {args.k}")

    started, cpu = time.perf_counter(), time.process_time()
    built = sets.build(
        keys, valid, salt=os.urandom(16), k=args.k, version=1, generation=1, built_at=BUILT_AT, today=TODAY
    )
    data = KEYS.sign_file(sets.SNAPSHOT_MAGIC, built.header, built.body)
    build_seconds = time.perf_counter() - started
    build_cpu = time.process_time() - cpu
    bound = sets.lower_bound_bits(n, r, args.k) / 8
    plain = sets.plain_list_bits(r) / 8
    print(
        f"build (hash, filter, exceptions, sign)  {build_seconds:8.2f} s wall, {build_cpu:.2f} s CPU"
        "   (target <= 60 s at 10,000,000)"
    )
    print(
        f"snapshot                              {mib(len(data))}   {8 * len(data) / r:6.2f} bits per valid card"
    )
    print(
        f"lower bound (same universe and k)     {mib(bound)}   snapshot / bound = {len(data) / bound:.3f}"
        "   (target <= 1.15)"
    )
    print(f"plain sorted list of valid hashes     {mib(plain)}   snapshot / list  = {len(data) / plain:.3f}")
    print(
        f"level-2 exceptions                    {built.header['exceptions']:,} keys of U \\ R "
        f"(expected {(n - r) * 2.0**-args.k:,.0f})"
    )

    started = time.perf_counter()
    _, header, body = signing.verify_file(data, PUBLIC)
    current = sets.OfflineSet.from_snapshot(header, body)
    print(f"reader: verify and load               {time.perf_counter() - started:8.2f} s")

    started = time.perf_counter()
    wrong = 0
    for at in range(0, n, 1 << 20):
        chunk = keys[at : at + (1 << 20)]
        wrong += int(
            (current.contains_hashes(fuse.hash_keys(chunk, current.salt)) != valid[at : at + (1 << 20)]).sum()
        )
    exact_seconds = time.perf_counter() - started
    print(
        f"exact over the whole universe         {'yes' if wrong == 0 else f'NO: {wrong} wrong'}"
        f"   ({n / exact_seconds:,.0f} lookups/s batched, from key bytes)"
    )
    forged = synthetic_keys(1_000_000, np.random.default_rng(args.seed + 7), start=n + 10**9)
    passed = int(current.contains_hashes(fuse.hash_keys(forged, current.salt)).sum())
    print(f"forged keys passing                   {passed} of 1,000,000 (expected {1e6 * 2.0**-args.k:.1f})")

    # lookups: per wall second and per CPU second of this process (the machine may be shared)
    sample = [bytes(k) for k in keys[rng.integers(0, n, size=200_000)]]
    batch = keys[rng.integers(0, n, size=1_000_000)]

    def rate(count: int, work: Callable[[], object]) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        work()
        return count / (time.perf_counter() - wall), count / max(time.process_time() - cpu, 1e-9)

    def singles() -> None:
        for key in sample[:20_000]:
            current.contains_key(key)

    def lists() -> None:
        for at in range(0, len(sample), 10_000):
            current.contains_keys(sample[at : at + 10_000])

    def arrays() -> None:
        for at in range(0, len(batch), 100_000):
            current.contains_hashes(fuse.hash_keys(batch[at : at + 100_000], current.salt))

    for label, (wall, cpu) in (
        ("single (one card per call)  ", rate(20_000, singles)),
        ("batched (bytes, 10,000/call)", rate(len(sample), lists)),
        ("batched (S64, 100,000/call) ", rate(len(batch), arrays)),
    ):
        print(f"lookups, {label}  {wall:12,.0f} /s wall  {cpu:12,.0f} /s per CPU second")
    print("   (target: batched >= 1,000,000 /s per core)")

    # a day of changes
    per_day = args.changes_per_day if args.changes_per_day is not None else max(1, round(n * 1.3e-4))
    flipped = rng.choice(n, size=per_day, replace=False)
    fresh = synthetic_keys(per_day // 2, rng, start=n + 2 * 10**9)
    changes = [sets.Change(bytes(keys[i]), not bool(valid[i])) for i in flipped]
    changes += [sets.Change(bytes(k), True) for k in fresh]
    order = rng.permutation(len(changes))
    changes = [changes[i] for i in order]
    daily = sets.build_delta(
        changes, salt=current.salt, generation=1, from_version=1, to_version=2, built_at=BUILT_AT
    )
    daily_bytes = len(KEYS.sign_file(sets.DELTA_MAGIC, daily.header, daily.body))
    fetches = max(1, round(24 * 60 / args.fetch_minutes))
    files: list[bytes] = []
    version = 1
    for part in np.array_split(np.arange(len(changes)), fetches):
        d = sets.build_delta(
            [changes[i] for i in part],
            salt=current.salt,
            generation=1,
            from_version=version,
            to_version=version + len(part) + 1,
            built_at=BUILT_AT,
        )
        version += len(part) + 1
        files.append(KEYS.sign_file(sets.DELTA_MAGIC, d.header, d.body))
    total = sum(len(f) for f in files)
    changed = len(changes)
    started = time.perf_counter()
    for f in files:
        _, header, body = signing.verify_file(f, PUBLIC)
        current.apply(header, body)
    apply_seconds = time.perf_counter() - started
    answers = current.contains_keys([c.key for c in changes])
    right = int((answers == np.array([c.valid for c in changes])).sum())
    print(
        f"a day's changes                       {changed:,} cards ({len(flipped):,} flipped, {len(fresh):,} new)"
    )
    print(
        f"  one daily delta                     {daily_bytes:,} bytes = {daily_bytes / changed:6.2f} bytes per changed card"
        "   (target <= 30)"
    )
    print(
        f"  {fetches} deltas, one per {args.fetch_minutes:g} min       {total:,} bytes = "
        f"{total / changed:6.2f} bytes per changed card (each file: header and signature, ~250 bytes)"
    )
    print(
        f"  verify and apply the day's deltas   {apply_seconds:8.2f} s; answers right after: {right:,} of {changed:,}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--valid", type=float, default=0.4)
    parser.add_argument("--changes-per-day", type=int, default=None)
    parser.add_argument("--fetch-minutes", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"offline set benchmark: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    for n in (int(s) for s in args.sizes.split(",")):
        run(n, args)


if __name__ == "__main__":
    main()
