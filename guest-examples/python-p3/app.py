"""rustcorn example guest in Python (componentize-py) for WASI 0.3, exporting `wasi:http/handler@0.3.0`
(the `wasi:http/service@0.3.0` world, built with `-w app` against ../../wit-0.3).

Routes:
  POST /echo    -> 200 with the request body echoed back (read whole, then written)
  anything else -> 200 "Hello from Python on WASI 0.3!\n" (text/plain)

The `wit_world` bindings are generated at build time (see ../build.sh); they are not kept in git.
"""

import componentize_py_async_support
from componentize_py_types import Ok
from wit_world import (
    byte_stream,
    exports,
    result_option_wasi_http_types_fields_wasi_http_types_error_code_future as trailers_future,
    result_unit_wasi_http_types_error_code_future as done_future,
)
from wit_world.imports.wasi_http_types import Fields, Method_Post, Request, Response

HELLO = b"Hello from Python on WASI 0.3!\n"
READ_CHUNK = 64 * 1024


class Handler(exports.Handler):
    async def handle(self, request: Request) -> Response:
        path = request.get_path_with_query() or "/"
        if path == "/echo" and isinstance(request.get_method(), Method_Post):
            _, done = done_future(lambda: Ok(None))
            contents, _ = Request.consume_body(request, done)
            body = bytearray()
            while not contents.writer_dropped:
                body += await contents.read(READ_CHUNK)
            return respond(bytes(body))
        return respond(HELLO)


def respond(body: bytes) -> Response:
    """A 200 response whose body a spawned task writes after the handler has returned it."""
    writer, reader = byte_stream()
    _, trailers = trailers_future(lambda: Ok(None))
    headers = Fields.from_list([("content-type", b"text/plain")])
    response, _ = Response.new(headers, reader, trailers)

    async def write() -> None:
        with writer:
            await writer.write_all(body)

    componentize_py_async_support.spawn(write())
    return response
