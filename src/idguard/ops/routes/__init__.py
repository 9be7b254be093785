"""The operations routes: GET /metrics."""
