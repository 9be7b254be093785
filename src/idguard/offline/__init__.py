"""Offline verification (离线核查, issue 20): an exact, signed set of the valid cards with small
signed deltas, for units that must keep checking through a network outage (docs/offline.md).

`install(app)` mounts the routes and gives the worker its OfflineService (the snapshot it keeps
and the signing keys). The reader a unit runs is `reader.py`, driven by `idguard offline …`
(cli.py); the set itself is pure (`sets.py`, `fuse.py`, `signing.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Add this feature's routes and the worker's OfflineService to the app."""
    from idguard.offline.routes import grants, sets
    from idguard.offline.service import OfflineService
    from idguard.offline.uploads import UploadedChecks

    app.state.offline = OfflineService(app.state.sessionmaker, app.state.clock, app.state.settings)
    # Uploaded offline checks are not judged by harvesting detection (uploads.UploadedChecks).
    uploaded = UploadedChecks(app.state.settings.check_hash_key)
    app.state.offline_uploads = uploaded
    log = app.state.verifier.log
    log.on_written = uploaded.observe(log.on_written)
    for module in (sets, grants):
        app.include_router(module.router)
    # `offline` in POST /api/v1/units and PATCH /api/v1/units/{code} (verification's routes).
    from idguard.offline.grants import UNIT_FLAG

    flags = getattr(app.state, "unit_flags", None) or {}
    app.state.unit_flags = {**flags, "offline": UNIT_FLAG}
