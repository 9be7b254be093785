from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter
from sqlalchemy.exc import OperationalError

from idguard.api.deps import SessionDep
from idguard.api.schemas import Health
from idguard.db.models import LedgerHead

router = APIRouter(prefix="/api/v1", tags=["health"])


@router.get("/health", response_model=Health)
def health(session: SessionDep) -> Health:
    """Liveness and database reachability, no auth. `ledger_seq` is the last committed event."""
    try:
        seq = session.scalar(sa.select(LedgerHead.seq).where(LedgerHead.id == 1))
    except OperationalError:
        return Health(status="degraded", database="unreachable", ledger_seq=None)
    return Health(status="ok", database="ok", ledger_seq=seq)
