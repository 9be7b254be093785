"""A node reads a snapshot with streams.fetch_object (issue 15: cold start): several consumers over
ranges of the chunks, written in place. What it returns must be the object byte for byte, also
when the chunks are not in one run of stream positions (two objects written at once), when the
object is one chunk or empty, and a missing object must say so."""

from __future__ import annotations

import asyncio
import logging
import os

import pytest
from nats.js.api import ObjectMeta, ObjectMetaOptions
from nats.js.errors import ObjectNotFoundError

from idguard.config import Settings
from idguard.scaleout import streams
from tests.functional.scaleout.support import needs_nats

pytestmark = needs_nats

CHUNK = 64 * 1024


def meta(name: str) -> ObjectMeta:
    return ObjectMeta(name=name, options=ObjectMetaOptions(max_chunk_size=CHUNK))


async def _round_trip(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    names = streams.names(settings)
    nc = await streams.connect(settings, name="idguard-test-fetch")
    try:
        js = nc.jetstream()
        await streams.ensure_streams(js, names)
        store = await js.object_store(names.snapshots)
        with pytest.raises(ObjectNotFoundError):
            await streams.fetch_object(js, names.snapshots, streams.INDEX_OBJECT)
        # One run of chunks (50 and a part), read by 1, 2 and 3 consumers.
        blob = os.urandom(50 * CHUNK + 1234)
        await store.put(streams.INDEX_OBJECT, blob, meta=meta(streams.INDEX_OBJECT))
        for parallel in (1, 2, 3):
            assert await streams.fetch_object(js, names.snapshots, streams.INDEX_OBJECT, parallel) == blob
        # Two objects written at once: their chunks alternate in the stream.
        first, second = os.urandom(40 * CHUNK), os.urandom(40 * CHUNK + 7)
        await asyncio.gather(
            store.put(streams.INDEX_OBJECT, first, meta=meta(streams.INDEX_OBJECT)),
            store.put("other", second, meta=meta("other")),
        )
        caplog.clear()
        assert await streams.fetch_object(js, names.snapshots, streams.INDEX_OBJECT, 3) == first
        assert await streams.fetch_object(js, names.snapshots, "other", 2) == second
        assert "reading them in order" in caplog.text  # the ranges did not make them: the fallback
        # One chunk, and nothing.
        await store.put(streams.INDEX_OBJECT, b"small", meta=meta(streams.INDEX_OBJECT))
        assert await streams.fetch_object(js, names.snapshots, streams.INDEX_OBJECT, 2) == b"small"
        await store.put(streams.INDEX_OBJECT, b"", meta=meta(streams.INDEX_OBJECT))
        assert await streams.fetch_object(js, names.snapshots, streams.INDEX_OBJECT) == b""
    finally:
        await nc.close()


def test_fetch_object_returns_the_object(nats_settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="idguard.scaleout")
    asyncio.run(_round_trip(nats_settings, caplog))
