from __future__ import annotations

import asyncio

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from idguard.registry.models import LedgerHead
from idguard.verification.routes.deps import get_verifier
from idguard.verification.schemas import Health

router = APIRouter(prefix="/api/v1", tags=["health"])

STALE_AFTER_SECONDS = 1.0
PROBE_SECONDS = 0.8  # the database probe's share of the one second health answers in


def ledger_seq(sessions: sessionmaker[Session]) -> int | None:
    """The last committed ledger seq, read in a thread (it may block while the database hangs)."""
    with sessions() as session:
        return session.scalar(sa.select(LedgerHead.seq).where(LedgerHead.id == 1))


@router.get("/health", response_model=Health)
async def health(request: Request) -> Health:
    """Liveness, no auth. `ledger_seq` is the last committed event; `index` says how current
    this worker's verification index is (`age_seconds` grows while the database is unreachable,
    and verification keeps answering from the index meanwhile); `check_log` how many answered
    checks are still waiting to be written. Answers within about a second whatever the database
    does: `database` is `timeout` when it did not answer within PROBE_SECONDS."""
    verifier = get_verifier(request)
    follower = verifier.follower
    extra = {
        "index": {
            "cards": len(verifier.index),
            "seq": follower.seq,
            "age_seconds": round(follower.age, 3),
            "loaded_in_seconds": round(follower.loaded_in, 3),
        },
        "check_log": {
            "pending": verifier.log.pending,
            "written": verifier.log.written,
            "failures": verifier.log.failures,
        },
        "blacklist_gallery": verifier.gallery.status(),
    }
    sessions: sessionmaker[Session] = request.app.state.sessionmaker
    try:
        # The probe's thread may go on waiting (until the connection's own timeouts, db/engine.py);
        # the answer does not.
        seq = await asyncio.wait_for(run_in_threadpool(ledger_seq, sessions), PROBE_SECONDS)
    except TimeoutError:
        return Health(status="degraded", database="timeout", ledger_seq=None, extra=extra)
    except (OperationalError, sa.exc.TimeoutError):
        return Health(status="degraded", database="unreachable", ledger_seq=None, extra=extra)
    status = "ok" if follower.age < STALE_AFTER_SECONDS else "degraded"
    return Health(status=status, database="ok", ledger_seq=seq, extra=extra)
