"""Impersonation (冒用): incidents from every signal, the impersonator blacklist, victim protection.

`install(app)` mounts the routes and wires the feature into the running service: the verifier
hands this package the checks worth an incident once they are durable, and the units suspected of
harvesting (hooks it offers, since verification may not import the watchlist); the incident
writer thread starts and stops with the verifier.
"""

from __future__ import annotations

from fastapi import FastAPI

from idguard.verification.verifier import Verifier
from idguard.watchlist.routes import blacklist as blacklist_routes
from idguard.watchlist.routes import incidents as incident_routes
from idguard.watchlist.routes import protection as protection_routes
from idguard.watchlist.runtime import IncidentWriter


def install(app: FastAPI) -> None:
    """Add this feature's routes (and any wiring into the running service) to the app."""
    # (Imported under other names: `idguard.watchlist.blacklist` is the use-case module.)
    for module in (incident_routes, blacklist_routes, protection_routes):
        app.include_router(module.router)
    verifier: Verifier = app.state.verifier
    writer = IncidentWriter(app.state.sessionmaker, app.state.clock)
    app.state.incident_writer = writer
    verifier.on_signals.append(writer.on_signals)
    verifier.on_harvesting.append(writer.on_harvesting)
    verifier.on_start.append(writer.start)
    verifier.on_stop.append(writer.stop)
