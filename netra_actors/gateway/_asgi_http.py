"""The ASGI adapter's HTTP bridge: one ASGI ``http`` request served by the shared routes.

The body is read on the asyncio side (at most :data:`~._http.MAX_BODY_BYTES`), the request is
handed to trio, where :class:`~._routes.Routes` answers it exactly as in the trio gateway, and
the answer goes back as ``http.response.*`` messages — or, for an AG-UI stream, as a
``text/event-stream`` head and one ``http.response.body`` chunk per batch of frames, each sent
within the send timeout. A client that goes away ends its stream. Also here: the translation
of an ASGI scope into an :class:`~._http.HttpRequest` and of an :class:`~._http.HttpResponse`
into ASGI messages, which the WebSocket side uses for its refusals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, MutableMapping
from typing import Any, cast

import attrs
import trio

from .._embed import EmbeddedRuntime
from .._exceptions import RuntimeClosedError
from ._agui_stream import SSE_CONTENT_TYPE
from ._http import MAX_BODY_BYTES, HttpRequest, HttpResponse
from ._state import ServerState

log = logging.getLogger("netra_actors.gateway")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@attrs.frozen
class Running:
    """What the adapter serves with while its lifespan runs."""

    state: ServerState
    embedded: EmbeddedRuntime
    """The runtime, a trio guest of the ASGI server's loop: requests are handed to it."""

    async def on_host(self, coro: Awaitable[Any]) -> Any:
        """From trio: run an ASGI ``receive``/``send`` coroutine on the host loop."""
        bridge = self.embedded._bridge
        return await bridge.run_on_host(cast("Coroutine[Any, Any, Any]", coro))


def request_from_scope(scope: Scope, body: bytes) -> HttpRequest:
    """The request of an ASGI ``http`` or ``websocket`` scope (its server address as ``local``)."""
    path = scope.get("path", "/")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    query = scope.get("query_string", b"")
    target = path + ("?" + query.decode("latin-1") if query else "")
    headers = tuple(
        (bytes(k).decode("latin-1").lower(), bytes(v).decode("latin-1"))
        for k, v in scope.get("headers", ())
    )
    method = scope.get("method", "GET")
    server = scope.get("server")
    local = (str(server[0]), int(server[1] or 0)) if server else None
    return HttpRequest(method=method, target=target, headers=headers, body=body, local=local)


def _headers(
    content_type: str, length: int | None, extra: Iterable[tuple[str, str]]
) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-type", content_type.encode()),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
    ]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    seen = {b"cache-control"}
    for key, value in extra:
        name = key.lower().encode("latin-1")
        if name in seen:
            headers = [(k, v) for k, v in headers if k != name]
        headers.append((name, value.encode("latin-1")))
    return headers


async def send_response(send: Send, response: HttpResponse, *, prefix: str = "") -> None:
    """A complete response (``prefix`` ``websocket.``: the refusal of an upgrade)."""
    kind = "websocket.http.response" if prefix else "http.response"
    await send(
        {
            "type": f"{kind}.start",
            "status": response.status,
            "headers": _headers(response.content_type, len(response.body), response.headers),
        }
    )
    await send({"type": f"{kind}.body", "body": response.body, "more_body": False})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def serve_http(running: Running | None, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one ASGI ``http`` request (503 while the runtime is not running)."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if len(body) > MAX_BODY_BYTES:
            await send_response(send, HttpResponse.text(413))
            return
        if not message.get("more_body"):
            break
    request = request_from_scope(scope, bytes(body))
    if running is None:
        await send_response(send, HttpResponse.text(503, "the runtime is not running"))
        return
    started: list[bool] = []  # set once the response head went out
    served = asyncio.ensure_future(running.embedded._call(_serve, running, request, send, started))
    disconnect = asyncio.ensure_future(_disconnected(receive))
    try:  # a client that goes away ends a stream (its trio task is cancelled)
        await asyncio.wait({served, disconnect}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (served, disconnect):
            task.cancel()
        outcomes = await asyncio.gather(served, disconnect, return_exceptions=True)
    failure = outcomes[0]
    if isinstance(failure, BaseException) and not started:
        if isinstance(failure, RuntimeClosedError):
            answer = HttpResponse.text(503, "server shutting down")
        elif isinstance(failure, asyncio.CancelledError):
            return  # the client went away first
        else:
            log.error("an HTTP request failed", exc_info=failure)
            answer = HttpResponse.text(500)
        running.state.count(request, answer.status)
        with contextlib.suppress(OSError, RuntimeError):
            await send_response(send, answer)


async def _serve(running: Running, request: HttpRequest, send: Send, started: list[bool]) -> None:
    """In trio: route the request; send the answer, or run the AG-UI stream it became."""
    state = running.state
    answer = await state.routes.http(request)
    timeout = state.config.send_timeout
    if isinstance(answer, HttpResponse):
        state.count(request, answer.status)
        started.append(True)
        with trio.move_on_after(timeout):
            await running.on_host(send_response(send, answer))
        return
    state.count(request, 200)

    async def chunk(data: bytes) -> None:
        with trio.fail_after(timeout):
            await running.on_host(
                send({"type": "http.response.body", "body": data, "more_body": True})
            )

    with state.running(websocket=False) as handler:
        try:  # from here on the stream is discarded on every way out
            state.attach(handler, answer)
            head = _headers(SSE_CONTENT_TYPE, None, answer.headers)
            started.append(True)
            with trio.fail_after(timeout):
                await running.on_host(
                    send({"type": "http.response.start", "status": 200, "headers": head})
                )
            if await answer.run(chunk):
                with trio.move_on_after(timeout):  # a client that stopped reading: drop it
                    await running.on_host(send({"type": "http.response.body", "body": b""}))
        except (OSError, RuntimeError, trio.TooSlowError):
            pass  # the client went away, or stopped reading: the connection is dropped
        finally:
            answer.discard()
