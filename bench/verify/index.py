"""Part 1: checks/s through `CardIndex.check` vs `CardIndex.bare_lookup`, in-process, one core;
and the index with the holders' alert flags (issue 10) against the index as it was before them
(bench/verify/index_before.py), with no card flagged and with 1 % of the numbers flagged, all on
the same queries in interleaved rounds. Target: <= 5 % more per check with 1 % flagged.

Times are the calling thread's CPU time (`time.thread_time`): on a shared machine a loop
descheduled for a while would otherwise count the neighbours' work as its own."""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import statistics
import time
from collections import Counter
from typing import Any

import sqlalchemy as sa

from bench.harness import met, note, settings_for, table
from bench.verify import index_before
from bench.verify.common import TARGET_CHECKS_PER_CORE, query_mix
from idguard.core.clock import today_cst
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.registry import sealed
from idguard.registry.models import Card
from idguard.verification.index import BLACKLISTED, CHECK_REQUIRED, CardFacts, CardIndex
from idguard.verification.runtime.follower import IndexFollower
from idguard.verification.runtime.keyring import KeyRing

FLAGGED_SHARE = 0.01
TARGET_FLAG_COST = 0.05  # a check with flags costs at most 5 % more than before them


def run(url: str, queries: int, reps: int) -> None:
    engine = make_engine(settings_for(url))
    index = CardIndex()
    IndexFollower(make_sessionmaker(engine), index, KeyRing()).load()
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(
                Card.id_number,
                Card.id,
                Card.seal_key,
                Card.name_sealed,
                Card.issued_on,
                Card.expires_on,
                Card.chip_serial,
                Card.status,
            )
        ).all()
    ring = sealed.ring_of(engine)  # names are sealed at rest (registry/sealed.py)
    rows = [(n, sealed.card_name(ring, i, k, s), *rest) for n, i, k, s, *rest in found]
    engine.dispose()
    before = index_before.CardIndex()
    before.load(index_before.CardFacts(*row) for row in rows)
    # The same cards, 1 % of the numbers' holders flagged (listed, or protected, or both).
    flagged = CardIndex()
    rng = random.Random(3)
    numbers = sorted({row[0] for row in rows})
    chosen = {
        n: rng.choice((BLACKLISTED, CHECK_REQUIRED, BLACKLISTED | CHECK_REQUIRED))
        for n in rng.sample(numbers, int(len(numbers) * FLAGGED_SHARE))
    }
    flagged.load(
        dataclasses.replace(facts, flags=chosen.get(facts.id_number, 0))
        for facts in (CardFacts(*row) for row in rows)
    )
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

    def timer(check: Any) -> Any:
        def run_check(qs: list[tuple[str, str, dt.date, dt.date | None]]) -> float:
            start = time.thread_time()
            for number, name, issued_on, expires_on in qs:
                check(number, name, issued_on, expires_on, today)
            return time.thread_time() - start

        return run_check

    run_check = timer(check)
    run_before, run_flagged = timer(before.check), timer(flagged.check)

    def run_bare(qs: list[tuple[str, str, dt.date, dt.date | None]]) -> float:
        start = time.thread_time()
        for number, _name, _issued_on, _expires_on in qs:
            bare(number)
        return time.thread_time() - start

    results = Counter(
        (r.value, s.value if s else "")
        for r, s, _ in (check(p.id_number, p.name, p.issued_on, p.expires_on, today) for p in probes)
    )
    check_rates, bare_rates, before_rates, flagged_rates = [], [], [], []
    for _ in range(reps):  # interleaved, so a neighbour's burst hits all alike
        bare_rates.append(queries / run_bare(fresh()))
        before_rates.append(queries / run_before(fresh()))
        check_rates.append(queries / run_check(fresh()))
        flagged_rates.append(queries / run_flagged(fresh()))
    c_med, b_med = statistics.median(check_rates), statistics.median(bare_rates)
    c_best, b_best = max(check_rates), max(bare_rates)
    o_med, o_best = statistics.median(before_rates), max(before_rates)
    f_med, f_best = statistics.median(flagged_rates), max(flagged_rates)
    hits = sum(1 for p in probes if p.id_number in chosen)
    table(
        f"Part 1 - in-process checks/s, one core ({len(index):,} cards indexed, {queries:,} queries x {reps} rounds)",
        ("path", "median/s", "best/s", "ns/check (best)", "vs bare (median)"),
        [
            ("bare_lookup (baseline)", b_med, b_best, 1e9 / b_best, 1.0),
            ("CardIndex.check before flags (e341529)", o_med, o_best, 1e9 / o_best, o_med / b_med),
            ("CardIndex.check, no card flagged", c_med, c_best, 1e9 / c_best, c_med / b_med),
            (
                f"CardIndex.check, {FLAGGED_SHARE:.0%} of numbers flagged",
                f_med,
                f_best,
                1e9 / f_best,
                f_med / b_med,
            ),
        ],
    )
    cost = o_med / f_med - 1  # time per check with flags over time per check before them
    note(
        f"flags: a check costs {cost:+.1%} with {FLAGGED_SHARE:.0%} of numbers flagged ({hits / queries:.1%} of "
        f"the queries hit a flagged holder), {o_med / c_med - 1:+.1%} with none, vs the index before "
        f"flags (medians); target <= +{TARGET_FLAG_COST:.0%}: {met(cost <= TARGET_FLAG_COST)}"
    )
    mix = ", ".join(f"{r}{'/' + s if s else ''} {n / queries:.1%}" for (r, s), n in sorted(results.items()))
    note(f"answers in the mix: {mix}")
    note(
        f"target >= {TARGET_CHECKS_PER_CORE:,} checks/s per core: {met(c_best >= TARGET_CHECKS_PER_CORE)} "
        f"(best {c_best:,.0f}, median {c_med:,.0f}; the bare lookup itself reaches {b_best:,.0f})"
    )
