"""`idguard relay`, `idguard verifier`, `idguard checklog-sink` (scale-out on NATS, issue 15)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    import asyncio

    from sqlalchemy.orm import Session

    SuspensionNotes = Callable[[Session], dict[str, str]]


def _until_signalled(stop: asyncio.Event) -> None:
    import asyncio
    import contextlib
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)


def register(app: typer.Typer, suspension_notes: SuspensionNotes | None = None) -> None:
    @app.command()
    def relay(
        snapshot_seconds: Annotated[
            float, typer.Option(help="write a snapshot of the index this often")
        ] = 300.0,
        lock: Annotated[
            bool,
            typer.Option(
                "--lock/--no-lock",
                help="run as one of several relays: publish only while holding the deployment's "
                "leadership lock (a PostgreSQL advisory lock; a file lock on SQLite), stand by "
                "otherwise and take over when the leader dies",
            ),
        ] = True,
    ) -> None:
        """Publish the ledger, the units' keys and states, and index snapshots to NATS JetStream
        (IDGUARD_NATS_URL, IDGUARD_NATS_PREFIX). Run two or more for failover: one leads
        (publishes), the others stand by and take over within a fraction of a second."""
        import asyncio

        from idguard import logs
        from idguard.config import Settings
        from idguard.db.engine import make_engine, make_sessionmaker
        from idguard.scaleout.relay import Leadership, Relay

        logs.install()
        settings = Settings()
        engine = make_engine(settings)

        async def main() -> None:
            stop = asyncio.Event()
            _until_signalled(stop)
            relay = Relay(
                settings,
                make_sessionmaker(engine),
                snapshot_seconds=snapshot_seconds,
                suspension_notes=suspension_notes,
                leadership=Leadership(settings) if lock else None,
            )
            while not stop.is_set():  # a leader that lost its lock stands by again
                await relay.run(stop)

        try:
            asyncio.run(main())
        finally:
            engine.dispose()

    @app.command()
    def verifier(
        host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="port to listen on")] = 8100,
        workers: Annotated[
            int,
            typer.Option(min=1, help="processes sharing the port (one per core); each is a node of its own"),
        ] = 1,
    ) -> None:
        """Serve POST /api/v1/verify, /verify/batch and /health from the ledger stream, with no
        database connection (IDGUARD_NATS_URL, IDGUARD_NATS_PREFIX, IDGUARD_SECRET_KEY).

        With `--workers N` the port is shared by N processes, each loading the snapshot, following
        the stream and announcing itself: a writer's read-your-write wait counts each (every one
        of them must have applied a report before it is acknowledged), and each holds its own
        index in memory (N × the index's size)."""
        import uvicorn

        uvicorn.run(
            "idguard.scaleout.node:create_node_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level="warning",
            access_log=False,
        )

    @app.command("checklog-sink")
    def checklog_sink() -> None:
        """Write the check stream into the database's check log (COPY, idempotent)."""
        import asyncio

        from idguard.config import Settings
        from idguard.db.engine import make_engine
        from idguard.scaleout.sink import Sink

        settings = Settings()
        engine = make_engine(settings)

        async def main() -> None:
            stop = asyncio.Event()
            _until_signalled(stop)
            await Sink(settings, engine).run(stop)

        try:
            asyncio.run(main())
        finally:
            engine.dispose()
