"""`GET /metrics`: Prometheus' text format, open or behind IDGUARD_METRICS_TOKEN (API.md, Operations)."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE
from starlette.exceptions import HTTPException

from idguard.config import Settings
from idguard.ops.metrics import Metrics

router = APIRouter(tags=["operations"])


def _authorized(request: Request, settings: Settings) -> bool:
    if settings.metrics_token is None:
        return True
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    expected = settings.metrics_token.get_secret_value().encode()
    # Compared in constant time, and always compared (an empty token costs the same).
    return hmac.compare_digest(token.strip().encode(), expected) and scheme.lower() == "bearer"


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE: {}}, "description": "The metrics, in Prometheus' text format."},
        401: {"description": "IDGUARD_METRICS_TOKEN is set and the request does not carry it."},
    },
)
def metrics(request: Request) -> Response:
    """The service's metrics for Prometheus (text exposition format 0.0.4): HTTP requests by
    method, route template and status with latency histograms, checks by result, each worker's
    index size and age and check-log backlog, loss reports, fingerprint comparisons at the
    counter, webhook units failing. With several workers the counts are every worker's
    (docs/operations.md). No personal data is ever a label. Open to anyone unless the operator
    sets IDGUARD_METRICS_TOKEN; then `Authorization: Bearer <token>` is required (401)."""
    settings: Settings = request.app.state.settings
    if not _authorized(request, settings):
        raise HTTPException(
            401,
            "GET /metrics needs the metrics token: Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    collected: Metrics = request.app.state.metrics
    return Response(collected.render(), media_type=CONTENT_TYPE)
