"""Hanging up without an answer, for the ``drop_after_commit`` fault ("the response was lost").

ASGI has no message for "close the connection and send nothing": an app may only answer, and an app that
fails or returns without answering gets a 500 from uvicorn. So the emulator serves uvicorn with its own HTTP
protocol class (``config.http``): a subclass of uvicorn's protocol whose app wrapper puts, into every
request's ``scope["extensions"]``, a callable that closes that request's TCP connection. A handler returns
``DropConnection()``; it closes the transport (FIN, no bytes written) and then waits for uvicorn to see the
connection lost (``http.disconnect``), so uvicorn neither answers nor logs an error. The client sees the
connection closed with no response: urllib3 raises ``RemoteDisconnected`` and the stripe SDK an
``APIConnectionError``, or retries with the same idempotency key and gets the saved response replayed.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.auto import AutoHTTPProtocol

DROP_EXTENSION = "stripe_emulator.drop_connection"


def droppable(base: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's HTTP protocol ``base`` (httptools or h11) that offers ``DROP_EXTENSION``.

    It relies on two attributes both of uvicorn's protocols have always had: ``app`` (the ASGI app it calls
    for each request) and ``transport`` (its connection)."""

    class Droppable(base):  # type: ignore[valid-type, misc]
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            app = self.app

            async def app_with_drop(scope, receive, send) -> None:
                scope.setdefault("extensions", {})[DROP_EXTENSION] = self.transport.close
                await app(scope, receive, send)

            self.app = app_with_drop

    Droppable.__name__ = Droppable.__qualname__ = f"Droppable{base.__name__}"
    return Droppable


DroppableHTTPProtocol = droppable(AutoHTTPProtocol)


class DropConnection:
    """An ASGI response that is no response: the connection is closed and nothing is sent."""

    async def __call__(self, scope, receive, send) -> None:
        drop = scope.get("extensions", {}).get(DROP_EXTENSION)
        if drop is None:
            raise RuntimeError("DropConnection needs the emulator's uvicorn protocol (connection.droppable)")
        drop()
        while (await receive())["type"] != "http.disconnect":
            pass
