"""rustcorn example guest in Python (componentize-py), exporting `wasi:http/incoming-handler`.

Routes:
  GET  /        -> 200 "Hello from Python!\n" (text/plain)
  POST /echo    -> 200 with the request body echoed back (read whole, then written)
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


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        method = request.method()
        path = (request.path_with_query() or "/").split("?", 1)[0]

        if path == "/" and isinstance(method, Method_Get):
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
