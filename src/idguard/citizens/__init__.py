"""Citizens' own view (公民): their record and cards, who checked them, who read the record, lock, reports, declarations, one-trip certificates."""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Add this feature's routes (and any wiring into the running service) to the app."""
