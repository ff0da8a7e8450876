"""rustcorn example guest in Python (componentize-py) using wasi:keyvalue and wasi:config, built
against the `app-with-state` world of the repository's wit/.

Routes:
  GET /            -> 200 "<greeting> from Python, visit N\n": config key `greeting` (else
                      "Hello"), counter `visits` in bucket `default`
  GET /incr/B/K    -> 200 "N\n", the counter K of bucket B after increment(K, 1)
  anything else    -> 404 "not found\n"
A key-value error is 403 "no-such-store" / "access-denied", or 503 "other: MESSAGE".

The `wit_world` bindings are generated at build time (see ../build.sh); they are not kept in git.
"""

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import atomics, wasi_config_store, wasi_keyvalue_store
from wit_world.imports.types import Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam


def send(response_out: ResponseOutparam, status: int, data: bytes) -> None:
    """Sends a complete text/plain response (one short write)."""
    response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
    response.set_status_code(status)
    body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    with body.write() as stream:
        stream.blocking_write_and_flush(data)
    OutgoingBody.finish(body, None)


def increment(bucket: str, key: str) -> int:
    with wasi_keyvalue_store.open(bucket) as handle:
        return atomics.increment(handle, key, 1)


def error_reply(e: Err) -> tuple:
    value = e.value
    if isinstance(value, wasi_keyvalue_store.Error_NoSuchStore):
        return 403, b"no-such-store\n"
    if isinstance(value, wasi_keyvalue_store.Error_AccessDenied):
        return 403, b"access-denied\n"
    if isinstance(value, wasi_keyvalue_store.Error_Other):
        return 503, f"other: {value.value}\n".encode()
    raise e


def greeting() -> str:
    try:
        return wasi_config_store.get("greeting") or "Hello"
    except Err:
        return "Hello"


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        path = (request.path_with_query() or "/").partition("?")[0]
        parts = path.strip("/").split("/")
        try:
            if path == "/":
                status, data = 200, f"{greeting()} from Python, visit {increment('default', 'visits')}\n".encode()
            elif len(parts) == 3 and parts[0] == "incr":
                status, data = 200, f"{increment(parts[1], parts[2])}\n".encode()
            else:
                status, data = 404, b"not found\n"
        except Err as e:
            status, data = error_reply(e)
        send(response_out, status, data)
