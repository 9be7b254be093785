from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Request
from sqlalchemy.exc import OperationalError

from idguard.api.deps import SessionDep
from idguard.registry.models import LedgerHead
from idguard.verification.routes.deps import get_verifier
from idguard.verification.schemas import Health

router = APIRouter(prefix="/api/v1", tags=["health"])

STALE_AFTER_SECONDS = 1.0


@router.get("/health", response_model=Health)
def health(request: Request, session: SessionDep) -> Health:
    """Liveness, no auth. `ledger_seq` is the last committed event; `index` says how current
    this worker's verification index is (`age_seconds` grows while the database is unreachable,
    and verification keeps answering from the index meanwhile); `check_log` how many answered
    checks are still waiting to be written."""
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
    }
    try:
        seq = session.scalar(sa.select(LedgerHead.seq).where(LedgerHead.id == 1))
    except OperationalError:
        return Health(status="degraded", database="unreachable", ledger_seq=None, extra=extra)
    status = "ok" if follower.age < STALE_AFTER_SECONDS else "degraded"
    return Health(status=status, database="ok", ledger_seq=seq, extra=extra)
