"""What `GET /metrics` shows, in the Prometheus text format (prometheus-client).

Three sources, so that nothing is counted on the verification hot path:

- **Events counted where they happen**, in each worker: HTTP requests by method, route TEMPLATE
  (never the raw path: a path can hold an id number) and status, with a latency histogram (the
  ops middleware); checks by result, counted when the check log's writer thread has written them
  (its `on_written` hook, off the request path).
- **Each worker's state, sampled** once a second by a thread of its own (and again by the worker
  answering a scrape): its index's size, age and ledger position, its check-log backlog, the
  check log's write failures.
- **The registry's state, read from the database** when scraped (at most every DB_SECONDS per
  worker): loss reports, fingerprint comparisons at the counter by purpose and outcome, the
  ledger's head, webhook units failing and their longest run of failures.

Several workers (uvicorn --workers N): every worker writes its counts to files in one directory
(prometheus_client's multiprocess mode; `IDGUARD_METRICS_DIR`, or `PROMETHEUS_MULTIPROC_DIR`),
and the worker answering a scrape adds up every worker's files: counters and histograms are
summed; the index gauges carry a `pid` label per worker; the check-log backlog is summed over
the workers alive. Without a directory, each worker counts alone (fine with one worker).
"""

from __future__ import annotations

import collections
import glob
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import sqlalchemy as sa
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from idguard import __version__
from idguard.biometrics.models import FingerprintComparison
from idguard.registry.models import LedgerHead, LossReport
from idguard.verification.models import WebhookCursor
from idguard.verification.verifier import Verifier

log = logging.getLogger("idguard.ops")

SAMPLE_SECONDS = 1.0  # how often a worker writes its state gauges
DB_SECONDS = 10.0  # the registry's figures are read at most this often per worker
# Request latency buckets (seconds): a single check answers in about a millisecond, a batch of
# 1000 in tens; writes commit in milliseconds on PostgreSQL; 10 s is SQLite's lock wait.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "<unmatched>"  # the route label of a request no route took (404, or refused before routing)


def multiprocess_dir(configured: Path | None) -> Path | None:
    """The directory of multiprocess mode, or None (each worker counts in memory)."""
    if configured is not None:
        return configured
    env = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(env) if env else None


def _use_directory(path: Path) -> None:
    """Make this process write its metric values to files in `path`. prometheus_client chooses
    files or memory when it is imported, from PROMETHEUS_MULTIPROC_DIR; a directory from the
    settings arrives later, so the choice is made again here, before any metric is built."""
    path.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    _forget_dead_workers(path)


def _forget_dead_workers(path: Path) -> None:
    """Drop the per-worker gauges of processes that are gone (a worker killed without its
    shutdown): their counters stay, so that the sums never go back."""
    for name in glob.glob(str(path / "gauge_live*_*.db")):
        try:
            pid = int(Path(name).stem.rsplit("_", 1)[1])
        except ValueError:
            continue
        if not _alive(pid):
            multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class Metrics:
    """One app's metrics: the objects its middleware, hooks and sampler update, and the scrape."""

    def __init__(
        self, verifier: Verifier, sessions: sessionmaker[Session], *, directory: Path | None
    ) -> None:
        self.directory = directory
        if directory is not None:
            _use_directory(directory)
        # `_created` series: noise for counters of a registry (and absent in multiprocess mode).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        # The objects are registered in a registry of this app's (tests build many apps in one
        # process); in multiprocess mode the scrape reads the files instead.
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "idguard_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ("method", "route", "status"),
            registry=r,
        )
        self.latency = Histogram(
            "idguard_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by method and route template.",
            ("method", "route"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.checks = Counter(
            "idguard_checks",
            "Checks (verify answers) written to the check log, by result.",
            ("result",),
            registry=r,
        )
        self.index_cards = Gauge(
            "idguard_index_cards",
            "Cards in the worker's verification index.",
            registry=r,
            multiprocess_mode="liveall",
        )
        self.index_age = Gauge(
            "idguard_index_age_seconds",
            "Seconds since the worker's index was last known current (grows while the database is unreachable).",
            registry=r,
            multiprocess_mode="liveall",
        )
        self.index_seq = Gauge(
            "idguard_index_ledger_seq",
            "The ledger sequence number the worker's index has applied.",
            registry=r,
            multiprocess_mode="liveall",
        )
        self.checklog_pending = Gauge(
            "idguard_checklog_pending",
            "Checks answered and not yet written to the database (the check log's backlog).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.checklog_failures = Counter(
            "idguard_checklog_write_failures",
            "Rounds in which the check log could not write to the database.",
            registry=r,
        )
        self.journal_failures = Counter(
            "idguard_checklog_journal_failures",
            "Groups of checks the check log's journal could not sync (those answers were refused).",
            registry=r,
        )
        self.journal_writes = Counter(
            "idguard_checklog_journal_writes",
            "Synced writes of the check log's journal (group commits): checks answered / writes is "
            "how many checks share a sync.",
            registry=r,
        )
        self.person_card_comparisons = Counter(
            "idguard_person_card_comparisons",
            "Fingerprint comparisons in units' person-card checks (人证一致性核查), by outcome.",
            ("matched",),
            registry=r,
        )
        self._verifier = verifier
        self._seen = (verifier.log.failures, verifier.log.journal_failures)
        self._seen_writes = verifier.log.journal_writes
        self._seen_comparisons: dict[bool, int] = dict(verifier.comparisons)
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._sample_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.database = RegistryCollector(sessions)

    # --- counted where it happens ------------------------------------------------------------

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """One answered request (called by the middleware, after the answer has left)."""
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def written(self, checks: list[tuple[str, str, str, str]]) -> None:
        """The check log wrote these checks: (unit code, operator, id hash, result) each."""
        for result, n in collections.Counter(c[3] for c in checks).items():
            self.checks.labels(result).inc(n)

    # --- sampled -----------------------------------------------------------------------------

    def sample(self) -> None:
        """Write this worker's state gauges (the sampler's thread, and a scrape)."""
        verifier = self._verifier
        with self._sample_lock:
            self.index_cards.set(len(verifier.index))
            self.index_age.set(verifier.follower.age)
            self.index_seq.set(verifier.follower.seq)
            self.checklog_pending.set(verifier.log.pending)
            failures, journal_failures = verifier.log.failures, verifier.log.journal_failures
            seen_failures, seen_journal = self._seen
            if failures > seen_failures:
                self.checklog_failures.inc(failures - seen_failures)
            if journal_failures > seen_journal:
                self.journal_failures.inc(journal_failures - seen_journal)
            self._seen = (failures, journal_failures)
            writes = verifier.log.journal_writes
            if writes > self._seen_writes:
                self.journal_writes.inc(writes - self._seen_writes)
                self._seen_writes = writes
            for matched, n in list(verifier.comparisons.items()):
                seen = self._seen_comparisons.get(matched, 0)
                if n > seen:
                    self.person_card_comparisons.labels("true" if matched else "false").inc(n - seen)
                    self._seen_comparisons[matched] = n

    def start(self) -> None:
        self._stop.clear()
        self.sample()
        self._thread = threading.Thread(target=self._run, name="idguard-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.directory is not None:  # this worker's gauges go; its counts stay in the sums
            multiprocess.mark_process_dead(os.getpid(), str(self.directory))  # type: ignore[no-untyped-call]

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            try:
                self.sample()
            except Exception:  # never expected; a metric must not take a worker down
                log.exception("metrics sample failed")

    # --- the scrape --------------------------------------------------------------------------

    def render(self) -> bytes:
        """The text a scrape answers: every worker's counts, and the registry's figures."""
        self.sample()
        if self.directory is None:
            registry = self.registry
        else:
            registry = CollectorRegistry(auto_describe=False)
            multiprocess.MultiProcessCollector(registry, str(self.directory))  # type: ignore[no-untyped-call]
        scrape = CollectorRegistry(auto_describe=False)
        scrape.register(_Merged(registry, self.database, multiprocess_on=self.directory is not None))
        return generate_latest(scrape)


class _Merged(Collector):
    """The counts (this app's registry, or every worker's files) followed by the registry's figures."""

    def __init__(
        self, counts: CollectorRegistry, database: RegistryCollector, *, multiprocess_on: bool
    ) -> None:
        self.counts = counts
        self.database = database
        self.multiprocess_on = multiprocess_on

    def collect(self) -> Iterable[Metric]:
        yield from self.counts.collect()
        info = GaugeMetricFamily("idguard_build_info", "The running version.", labels=("version",))
        info.add_metric((__version__,), 1.0)
        yield info
        yield GaugeMetricFamily(
            "idguard_metrics_multiprocess",
            "1 when the counts are every worker's (a metrics directory is set), 0 when only this worker's.",
            value=1.0 if self.multiprocess_on else 0.0,
        )
        yield from self.database.collect()


class RegistryCollector(Collector):
    """Figures read from the database at scrape time, kept for DB_SECONDS (cheap queries: one
    row, or an aggregate over a table that grows by the counter's pace, not the checks')."""

    def __init__(self, sessions: sessionmaker[Session], *, ttl: float = DB_SECONDS) -> None:
        self._sessions = sessions
        self._ttl = ttl
        self._lock = threading.Lock()
        self._cached: list[Metric] | None = None
        self._at = 0.0

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._at >= self._ttl:
                self._cached = list(self._read())
                self._at = now
            return list(self._cached)

    def _read(self) -> Iterator[Metric]:
        started = time.monotonic()
        try:
            with self._sessions() as session:
                figures = _figures(session)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("metrics: the registry database could not be read (%s)", type(exc).__name__)
            yield GaugeMetricFamily(
                "idguard_database_up", "1 when the last read of the registry's figures succeeded.", value=0.0
            )
            return
        yield GaugeMetricFamily(
            "idguard_database_up", "1 when the last read of the registry's figures succeeded.", value=1.0
        )
        yield GaugeMetricFamily(
            "idguard_registry_read_seconds",
            "How long reading the registry's figures for /metrics took.",
            value=time.monotonic() - started,
        )
        yield from figures


def _figures(session: Session) -> list[Metric]:
    seq = session.scalar(sa.select(LedgerHead.seq).where(LedgerHead.id == 1)) or 0
    reports, cancelled = session.execute(
        sa.select(sa.func.count(), sa.func.count(LossReport.cancelled_at))
    ).one()
    comparisons = session.execute(
        sa.select(FingerprintComparison.purpose, FingerprintComparison.matched, sa.func.count()).group_by(
            FingerprintComparison.purpose, FingerprintComparison.matched
        )
    ).all()
    failing, worst = session.execute(
        sa.select(
            sa.func.count().filter(WebhookCursor.failures > 0),
            sa.func.coalesce(sa.func.max(WebhookCursor.failures), 0),
        )
    ).one()
    out: list[Metric] = [
        GaugeMetricFamily("idguard_ledger_seq", "The last committed ledger sequence number.", value=seq),
        CounterMetricFamily("idguard_loss_reports", "Loss reports accepted (all time).", value=reports),
        CounterMetricFamily(
            "idguard_loss_reports_cancelled", "Loss reports cancelled (all time).", value=cancelled
        ),
    ]
    family = CounterMetricFamily(
        "idguard_fingerprint_comparisons",
        "On-site 1:1 fingerprint comparisons at a counter (all time), by purpose and outcome.",
        labels=("purpose", "matched"),
    )
    for purpose, matched, n in comparisons:
        family.add_metric((purpose, "true" if matched else "false"), n)
    out.append(family)
    out.append(
        GaugeMetricFamily(
            "idguard_webhook_units_failing",
            "Units whose webhook's last delivery failed (backing off; the webhook backlog).",
            value=failing,
        )
    )
    out.append(
        GaugeMetricFamily(
            "idguard_webhook_consecutive_failures_max",
            "The longest run of failed deliveries among units' webhooks.",
            value=worst,
        )
    )
    return out
