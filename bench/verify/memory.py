"""Part 4 (`--memory`): index bytes per card with the large registry loaded in-process by
`IndexFollower.load()`, and start-up time to a ready index, in-process and for a real server
(baseline: the same server on an empty registry)."""

from __future__ import annotations

import gc
import os
import sys
import time
import tracemalloc
from pathlib import Path

import sqlalchemy as sa

from bench.harness import http_json, met, note, scratch_database, server, settings_for, table
from bench.verify.common import TARGET_BYTES_PER_CARD, cached_demo, rss_bytes
from idguard.db import migrate
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.verification.index import CardIndex
from idguard.verification.runtime.follower import IndexFollower
from idguard.verification.runtime.keyring import KeyRing

MEMORY_DATABASE = "idguard_bench_1m"


def index_bytes(index: CardIndex) -> int:
    """Every object the index owns: the dict, its keys, packed ints and tuples of them."""
    entries = index._entries  # measurement only
    total = sys.getsizeof(entries)
    for number, value in entries.items():
        total += sys.getsizeof(number)
        if isinstance(value, tuple):
            total += sys.getsizeof(value) + sum(sys.getsizeof(p) for p in value)
        else:
            total += sys.getsizeof(value)
    return total


def self_rss() -> int:
    return rss_bytes(os.getpid())


def run(admin: sa.Engine, admin_url: str, citizens: int, workdir: Path) -> None:
    url = cached_demo(admin, admin_url, MEMORY_DATABASE, citizens)
    engine = make_engine(settings_for(url))
    sessions = make_sessionmaker(engine)

    def load() -> tuple[IndexFollower, float]:
        f = IndexFollower(sessions, CardIndex(), KeyRing())
        started = time.perf_counter()
        f.load()
        return f, time.perf_counter() - started

    # The timed load first, in a fresh process: its RSS delta is not flattered by arenas an
    # earlier load freed. tracemalloc then counts the same load exactly (it runs ~5x slower).
    gc.collect()
    rss0 = self_rss()
    follower, seconds = load()
    gc.collect()
    rss_delta = self_rss() - rss0
    cards = len(follower.index)
    owned = index_bytes(follower.index)
    del follower
    gc.collect()
    tracemalloc.start()
    traced, traced_seconds = load()
    gc.collect()
    current, peak_traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del traced
    engine.dispose()

    # A real server: spawn to healthy, and its RSS, against the 1M registry and an empty one.
    with scratch_database(admin, admin_url, "idguard_bench_empty") as empty_url:
        empty_engine = make_engine(settings_for(empty_url))
        migrate.upgrade(empty_engine)
        empty_engine.dispose()
        with server(empty_url, workdir / "part4-empty.log") as s:
            empty_start, empty_rss = s.started_in, rss_bytes(s.proc.pid)
        with server(url, workdir / "part4-1m.log") as s:
            full_start, full_rss = s.started_in, rss_bytes(s.proc.pid)
            health = http_json(s.port, "GET", "/api/v1/health")[1]["extra"]["index"]

    table(
        f"Part 4 - index memory and start-up ({cards:,} cards, {citizens:,} citizens)",
        ("measure", "bytes", "bytes/card", "seconds"),
        [
            ("objects the index owns (getsizeof walk)", owned, owned / cards, ""),
            ("tracemalloc around IndexFollower.load()", current, current / cards, traced_seconds),
            ("  peak during that load", peak_traced, peak_traced / cards, ""),
            ("process RSS delta around load()", rss_delta, rss_delta / cards, seconds),
            ("server on an empty registry (baseline)", empty_rss, "", empty_start),
            ("server on this registry", full_rss, (full_rss - empty_rss) / cards, full_start),
        ],
    )
    note(
        f"bytes/card (tracemalloc) {current / cards:.0f}; target <= {TARGET_BYTES_PER_CARD}: "
        f"{met(current / cards <= TARGET_BYTES_PER_CARD)}; RSS says {rss_delta / cards:.0f} in-process, "
        f"{(full_rss - empty_rss) / cards:.0f} in a server"
    )
    note(
        f"start-up to a ready index: {seconds:.1f} s in-process ({cards / seconds:,.0f} cards/s); server spawn "
        f"to healthy {full_start:.1f} s vs {empty_start:.1f} s empty (index load as the server logs it: "
        f"{health['loaded_in_seconds']:.1f} s, {health['cards']:,} cards)"
    )
