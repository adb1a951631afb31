"""A small HTTP/1.1 front (h11 on trio): one request per TCP connection.

trio-websocket alone answers a plain ``GET`` with 400, so this front reads each connection's first
request with h11 and either answers it (``GET /``, ``/healthz``, ``/metrics`` …) through the
:class:`HttpApp` or, for a WebSocket upgrade request, hands the connection — with the bytes
already read — to the app's :meth:`HttpApp.websocket`. Every response closes the connection
(``Connection: close``): the page is one file and the rest are probes, so keep-alive would buy
nothing and cost state.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from typing import Protocol

import attrs
import h11
import trio

log = logging.getLogger("netra_actors.gateway")

MAX_HEADER_BYTES = 16 * 1024
"""Request line and headers together; larger requests are refused."""
MAX_BODY_BYTES = 1024 * 1024
"""Request bodies: ``POST /agui`` carries a conversation; ``POST /dev/token`` a user name."""
RECEIVE_CHUNK = 16 * 1024


@attrs.frozen(kw_only=True)
class HttpRequest:
    """One parsed request."""

    method: str
    target: str
    """The request target as sent (path and query)."""
    headers: tuple[tuple[str, str], ...]
    """Header names lower-cased, values as sent (latin-1 decoded), in order."""
    body: bytes = b""
    local: tuple[str, int] | None = None
    """The server's own address the request came to (the socket's name; the ASGI ``server``):
    never taken from a header."""

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` (lower-case), if present."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found

    def header_count(self, name: str) -> int:
        """How many times header ``name`` (lower-case) is present."""
        return sum(1 for key, _ in self.headers if key == name)

    @property
    def wants_websocket(self) -> bool:
        """True if this is a WebSocket upgrade request (``Upgrade: websocket``)."""
        upgrade = self.header("upgrade") or ""
        return "websocket" in (token.strip().lower() for token in upgrade.split(","))


@attrs.frozen(kw_only=True)
class HttpResponse:
    """A complete response."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    stream: Callable[[Callable[[bytes], Awaitable[None]]], Awaitable[bool]] | None = None
    """A streamed body (Server-Sent Events): called with ``send(chunk)`` after the head; the
    response ends when it returns (True: complete it; False: a send failed, drop it). ``body``
    is ignored then."""
    on_client_gone: Callable[[], None] | None = None
    """For a streamed body: called once the client has closed its side, or if the head could not
    be sent (the body must end and give back what it holds)."""

    @classmethod
    def text(cls, status: int, text: str | None = None) -> HttpResponse:
        """A plain-text response (the status phrase when ``text`` is None)."""
        if text is None:
            text = f"{status} {HTTPStatus(status).phrase}"
        return cls(status=status, body=(text + "\n").encode())


class HttpApp(Protocol):
    """What the front serves."""

    async def http(self, request: HttpRequest) -> HttpResponse:
        """Answer a plain HTTP request."""
        ...

    async def websocket(
        self, request: HttpRequest, stream: trio.abc.Stream, prefix: bytes
    ) -> HttpResponse | None:
        """Handle an upgrade request: return a response to refuse it (before any upgrade), or
        run the WebSocket to its end on ``stream`` (``prefix``: the bytes already read from it)
        and return None."""
        ...


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _read_request(
    stream: trio.abc.Stream, conn: h11.Connection, raw: bytearray, local: tuple[str, int] | None
) -> HttpRequest | None:
    """Read one request (and its body) with h11. None if the peer closed before sending one."""
    request: h11.Request | None = None
    body = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise _BadRequest(exc.error_status_hint, str(exc)) from None
        if event is h11.NEED_DATA:
            data = bytes(await stream.receive_some(RECEIVE_CHUNK))
            if len(raw) + len(data) > MAX_HEADER_BYTES + MAX_BODY_BYTES:
                raise _BadRequest(413, "request too large")
            raw += data
            conn.receive_data(data)
            if not data and request is None:
                return None
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY_BYTES:
                raise _BadRequest(413, "request body too large")
        elif isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
            if request is None:  # pragma: no cover - h11 always yields the request first
                raise _BadRequest(400, "no request")
            return HttpRequest(
                method=request.method.decode("ascii", "replace"),
                target=request.target.decode("ascii", "replace"),
                headers=tuple(
                    (k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in request.headers
                ),
                body=bytes(body),
                local=local,
            )
        elif isinstance(event, h11.ConnectionClosed):
            return None


async def _send_response(
    stream: trio.abc.Stream, conn: h11.Connection, response: HttpResponse, send_timeout: float
) -> None:
    headers: list[tuple[str, str]] = [
        ("content-type", response.content_type),
        ("content-length", str(len(response.body))),
        ("connection", "close"),
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
        *response.headers,
    ]
    if response.stream is not None:
        del headers[1]  # no length: chunked (HTTP/1.1) or until the close (HTTP/1.0)
    try:
        reason = HTTPStatus(response.status).phrase.encode()
    except ValueError:
        reason = b""
    data = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
    assert data is not None
    if response.stream is not None:
        await _send_stream(stream, conn, data, response, send_timeout)
        return
    if response.body:
        data += conn.send(h11.Data(data=response.body)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)


async def _send_stream(
    stream: trio.abc.Stream,
    conn: h11.Connection,
    head: bytes,
    response: HttpResponse,
    send_timeout: float,
) -> None:
    """Send the head, then each chunk the body produces (each within the send timeout), while
    watching for the client to close its side (an idle stream would not notice otherwise)."""
    body = response.stream
    assert body is not None

    async def send(chunk: bytes) -> None:
        data = conn.send(h11.Data(data=chunk)) or b""
        with trio.fail_after(send_timeout):
            await stream.send_all(data)

    async def watch() -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while await stream.receive_some(RECEIVE_CHUNK):
                pass  # a client says nothing more on a streamed response: ignore it
        if response.on_client_gone is not None:
            response.on_client_gone()

    clean = False

    async def run_body() -> None:
        nonlocal clean
        clean = await body(send)
        nursery.cancel_scope.cancel()  # stop watching

    try:
        with trio.fail_after(send_timeout):
            await stream.send_all(head)
    except BaseException:
        if response.on_client_gone is not None:
            response.on_client_gone()  # the body never runs: let it give back what it holds
        raise
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            nursery.start_soon(run_body)
    except* trio.TooSlowError:
        log.info("a streamed response was not taken within %.1fs; dropping it", send_timeout)
    if not clean:
        return  # a chunk may be half-written: drop the connection, never complete it
    with trio.move_on_after(send_timeout):
        await stream.send_all(conn.send(h11.EndOfMessage()) or b"")


async def serve_http_connection(
    stream: trio.abc.Stream,
    app: HttpApp,
    *,
    request_timeout: float,
    send_timeout: float,
    local: tuple[str, int] | None = None,
) -> None:
    """Serve one TCP connection: read its request, answer it or hand it to the WebSocket side.
    ``local`` is the server's own address the connection reached (:attr:`HttpRequest.local`).

    Contains every failure: a broken peer or a bug in a handler is logged, never raised.
    """
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
    raw = bytearray()
    try:
        response: HttpResponse | None
        try:
            with trio.fail_after(request_timeout):
                request = await _read_request(stream, conn, raw, local)
        except _BadRequest as exc:
            log.info("bad HTTP request: %s", exc)
            response = HttpResponse.text(exc.status)
            request = None
        except trio.TooSlowError:
            log.info("HTTP request not received within %.1fs; dropping it", request_timeout)
            return
        else:
            if request is None:
                return
            if request.wants_websocket:
                response = await app.websocket(request, stream, bytes(raw))
                if response is None:
                    return  # the WebSocket ran on this stream
            else:
                response = await app.http(request)
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            if response.stream is not None:
                await _send_response(stream, conn, response, send_timeout)
            else:
                with trio.move_on_after(send_timeout):
                    await _send_response(stream, conn, response, send_timeout)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the peer went away
    except Exception:
        log.exception("HTTP connection handler failed; the connection is dropped")
    finally:
        await trio.aclose_forcefully(stream)


def json_response(
    status: int, body: bytes, headers: Sequence[tuple[str, str]] = ()
) -> HttpResponse:
    """A JSON response from already-encoded JSON."""
    return HttpResponse(
        status=status, body=body, content_type="application/json", headers=tuple(headers)
    )
