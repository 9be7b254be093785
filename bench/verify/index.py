"""Part 1: checks/s through `CardIndex.check` vs `CardIndex.bare_lookup`, in-process, one core."""

from __future__ import annotations

import datetime as dt
import statistics
import time
from collections import Counter

from bench.harness import met, note, settings_for, table
from bench.verify.common import TARGET_CHECKS_PER_CORE, query_mix
from idguard.core.clock import today_cst
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.verification.index import CardIndex
from idguard.verification.runtime.follower import IndexFollower
from idguard.verification.runtime.keyring import KeyRing


def run(url: str, queries: int, reps: int) -> None:
    engine = make_engine(settings_for(url))
    index = CardIndex()
    IndexFollower(make_sessionmaker(engine), index, KeyRing()).load()
    engine.dispose()
    today = today_cst(dt.datetime.now(dt.UTC))
    probes = query_mix(url, queries, today)

    def fresh() -> list[tuple[str, str, dt.date, dt.date | None]]:
        # New string objects each round, as parsed from a request: their hashes are not cached
        # yet, so both loops pay for hashing the number (and check for hashing the name).
        return [
            (p.id_number.encode().decode(), p.name.encode().decode(), p.issued_on, p.expires_on)
            for p in probes
        ]

    check, bare = index.check, index.bare_lookup

    def run_check(qs: list[tuple[str, str, dt.date, dt.date | None]]) -> float:
        start = time.perf_counter()
        for number, name, issued_on, expires_on in qs:
            check(number, name, issued_on, expires_on, today)
        return time.perf_counter() - start

    def run_bare(qs: list[tuple[str, str, dt.date, dt.date | None]]) -> float:
        start = time.perf_counter()
        for number, _name, _issued_on, _expires_on in qs:
            bare(number)
        return time.perf_counter() - start

    results = Counter(
        (r.value, s.value if s else "")
        for r, s in (check(p.id_number, p.name, p.issued_on, p.expires_on, today) for p in probes)
    )
    check_rates, bare_rates = [], []
    for _ in range(reps):  # interleaved, so a neighbour's burst hits both alike
        bare_rates.append(queries / run_bare(fresh()))
        check_rates.append(queries / run_check(fresh()))
    c_med, b_med = statistics.median(check_rates), statistics.median(bare_rates)
    c_best, b_best = max(check_rates), max(bare_rates)
    table(
        f"Part 1 - in-process checks/s, one core ({len(index):,} cards indexed, {queries:,} queries x {reps} rounds)",
        ("path", "median/s", "best/s", "ns/check (best)", "vs bare (median)"),
        [
            ("bare_lookup (baseline)", b_med, b_best, 1e9 / b_best, 1.0),
            ("CardIndex.check", c_med, c_best, 1e9 / c_best, c_med / b_med),
        ],
    )
    mix = ", ".join(f"{r}{'/' + s if s else ''} {n / queries:.1%}" for (r, s), n in sorted(results.items()))
    note(f"answers in the mix: {mix}")
    note(
        f"target >= {TARGET_CHECKS_PER_CORE:,} checks/s per core: {met(c_best >= TARGET_CHECKS_PER_CORE)} "
        f"(best {c_best:,.0f}, median {c_med:,.0f}; the bare lookup itself reaches {b_best:,.0f})"
    )
