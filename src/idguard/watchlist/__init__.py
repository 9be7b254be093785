"""Impersonation (冒用): incidents from every signal, the impersonator blacklist, victim protection."""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Add this feature's routes (and any wiring into the running service) to the app."""
