"""Operations (issue 16): `GET /metrics`, request ids and JSON logs, security headers on every
answer, and `idguard backup`. docs/operations.md is the operator's guide.

`install(app)` wires it into an app built by `create_app`: the middleware outermost (so it sees
every answer, the request guard's refusals included), the metrics route, the check log's
written-checks hook and the sampler thread (started and stopped with the worker's verifier),
and the log format.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["install"]

log = logging.getLogger("idguard.ops")


def install(app: FastAPI) -> None:
    # Imported here, as the other features do: `idguard backup` and the rest of the command line
    # import this package (ops/cli.py), and need none of the web stack.
    from idguard import logs
    from idguard.config import Environment, Settings
    from idguard.ops.chains import ChainKeeper
    from idguard.ops.metrics import Metrics, multiprocess_dir
    from idguard.ops.middleware import OpsMiddleware
    from idguard.ops.routes import metrics as metrics_route
    from idguard.registry import chains
    from idguard.verification.runtime.partitions import PartitionKeeper
    from idguard.verification.verifier import Verifier

    settings: Settings = app.state.settings
    verifier: Verifier = app.state.verifier
    logs.use_format(settings.log_format)
    directory = multiprocess_dir(settings.metrics_dir)
    metrics = Metrics(verifier, app.state.sessionmaker, directory=directory)
    app.state.metrics = metrics
    if directory is None and settings.workers > 1:
        log.warning(
            "%d workers and no IDGUARD_METRICS_DIR: /metrics shows only the counts of the worker "
            "that answers it (docs/operations.md)",
            settings.workers,
        )
    # Checks by result, counted by the check log's writer thread after each write (off the
    # request path), before whatever was told of them already (harvesting detection).
    told = verifier.log.on_written

    def written(checks: list[tuple[str, str, str, str]]) -> None:
        metrics.written(checks)
        if told is not None:
            told(checks)

    verifier.log.on_written = written
    verifier.on_start.append(metrics.start)
    verifier.on_stop.append(metrics.stop)
    if settings.env is not Environment.TEST:  # tests seal and checkpoint explicitly (ops/chains.py)
        keeper = ChainKeeper(app.state.engine, chains.keyring(settings), now=app.state.clock.now)
        verifier.on_start.append(keeper.start)
        verifier.on_stop.append(keeper.stop)
    # The check log's monthly partitions (PostgreSQL): the coming months created at start and daily.
    partition_keeper = PartitionKeeper(app.state.engine, now=app.state.clock.now)
    verifier.on_start.append(partition_keeper.start)
    verifier.on_stop.append(partition_keeper.stop)
    app.include_router(metrics_route.router)
    app.add_middleware(OpsMiddleware, metrics=metrics, hsts=settings.env is not Environment.DEVELOPMENT)
