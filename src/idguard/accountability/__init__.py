"""Accountability of units (责任追究): transactions reconciled with checks, monthly compliance, cases, suspension."""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Add this feature's routes (and any wiring into the running service) to the app."""
