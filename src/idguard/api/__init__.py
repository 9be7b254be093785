"""The HTTP API (FastAPI): routers by resource, dependencies, request/response schemas."""
