"""The web console: server-rendered pages for clerks, supervisors, auditors, unit tellers and citizens."""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Add the console's pages and static files to the app."""
