"""Citizens' own view (公民): their record and cards, who checked them, who read the record, lock, reports, declarations, one-trip certificates."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Add this feature's routes and its keys (citizen tokens, activation codes, TOTP sealing,
    declaration signing) to the app. Bad or missing declaration keys fail here, at start."""
    from idguard.citizens.routes import accounts, certificates, declarations, me
    from idguard.citizens.routes.deps import CitizenKeys

    app.state.citizen_keys = CitizenKeys.from_settings(app.state.settings)
    for module in (accounts, me, declarations, certificates):
        app.include_router(module.router)
