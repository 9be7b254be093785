"""The bare ASGI floor of bench/floor.py: every request is answered with one constant JSON body.

Nothing but what any ASGI server must do for a request: the body is read (a client's POST), and
a ~100-byte JSON answer (the size of a verify answer) is sent with a content type and length. Served by uvicorn with httptools
and uvloop, one worker, its access log on (`python -m uvicorn _floor_app:app --app-dir bench`).
"""

from __future__ import annotations

from typing import Any

_BODY = (
    b'{"result":"valid","check_id":"0b9f1c1e-5d0c-4a8e-9d5e-2c1a7f0e9b11","checked_at":"2026-06-15T02:00Z"}'
)
_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())],
}
_ANSWER = {"type": "http.response.body", "body": _BODY}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":  # lifespan: nothing to start or stop
        message = await receive()
        while message["type"] != "lifespan.shutdown":
            await send({"type": message["type"] + ".complete"})
            message = await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    message = await receive()
    while message.get("more_body", False):
        message = await receive()
    await send(_START)
    await send(_ANSWER)
