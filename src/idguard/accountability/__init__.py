"""Accountability of units (责任追究): transactions reconciled with checks, monthly compliance, cases, suspension."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Add this feature's routes, and wire it into the running service: the key ring reads why
    a unit is suspended (its 401 says so); units' notification channels carry case items."""
    from idguard.accountability import cases, notices
    from idguard.accountability.routes import cases as case_routes
    from idguard.accountability.routes import compliance, statistics, transactions

    for module in (transactions, compliance, case_routes, statistics):
        app.include_router(module.router)
    verifier = app.state.verifier
    verifier.keyring.suspension_notes = cases.suspension_notes
    notices.install(verifier)
