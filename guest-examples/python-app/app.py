"""rustcorn example guest in Python (componentize-py), exporting `wasi:http/incoming-handler`.

Routes:
  GET  /        -> 200 "Hello from Python!\n" (text/plain)
  POST /echo    -> 200 with the request body echoed back (read whole, then written)
  any  /plain    -> 200 "request N of this instance, M body bytes\n": written as a new user would,
                    reading headers and body without `with` blocks or explicit drops (see `plain`);
                    with `?unread` it leaves the body unread and keeps the request in a global
  anything else -> 404 "not found\n"

The `wit_world` bindings are generated at build time (see ../build.sh); they are not kept in git.
"""

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    Method_Get,
    Method_Post,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)

# blocking-write-and-flush accepts at most 4096 bytes per call.
WRITE_CHUNK = 4096
READ_CHUNK = 64 * 1024


def read_body(request: IncomingRequest) -> bytes:
    """Reads the whole request body. Child resources are released before their parents."""
    parts = []
    with request.consume() as body:
        with body.stream() as stream:
            while True:
                try:
                    parts.append(stream.blocking_read(READ_CHUNK))
                except Err as e:
                    if isinstance(e.value, StreamError_Closed):
                        break
                    raise
    return b"".join(parts)


def send(response_out: ResponseOutparam, status: int, content_type: bytes, data: bytes) -> None:
    """Sends a complete response with one content-type header."""
    response = OutgoingResponse(Fields.from_list([("content-type", content_type)]))
    response.set_status_code(status)
    body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    # The stream must be released before the body is finished.
    with body.write() as stream:
        for start in range(0, len(data), WRITE_CHUNK):
            stream.blocking_write_and_flush(data[start : start + WRITE_CHUNK])
    OutgoingBody.finish(body, None)


# Requests this instance has served on /plain: 1 on every request with a fresh instance per
# request, counting up while --instance-reuse keeps the instance.
plain_served = 0
# Requests kept by /plain?unread (a leak, as an app with a cache of requests would have).
unread_requests = []


def plain(request: IncomingRequest, response_out: ResponseOutparam, read: bool) -> None:
    """Reads the request the way a first-time user writes it: the headers, the body and its
    stream are never closed (no `with`, no drop); only the response stream is closed, because
    finishing the body requires it."""
    global plain_served
    plain_served += 1
    agent = request.headers().get("user-agent")
    data = b""
    if read:
        body = request.consume()
        stream = body.stream()
        while True:
            try:
                data += stream.blocking_read(READ_CHUNK)
            except Err:
                break
    else:
        unread_requests.append(request)
    text = f"request {plain_served} of this instance, {len(data)} body bytes\n"
    response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
    out_body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    with out_body.write() as out:
        out.blocking_write_and_flush(text.encode())
    OutgoingBody.finish(out_body, None)
    del agent


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        method = request.method()
        path, _, query = (request.path_with_query() or "/").partition("?")

        if path == "/plain":
            plain(request, response_out, query != "unread")
        elif path == "/" and isinstance(method, Method_Get):
            send(response_out, 200, b"text/plain", b"Hello from Python!\n")
        elif path == "/echo" and isinstance(method, Method_Post):
            with request.headers() as headers:
                content_type = headers.get("content-type")
            data = read_body(request)
            send(
                response_out,
                200,
                content_type[0] if content_type else b"application/octet-stream",
                data,
            )
        else:
            send(response_out, 404, b"text/plain", b"not found\n")
