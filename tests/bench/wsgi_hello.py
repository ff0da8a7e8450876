"""WSGI hello world for the Gunicorn peer in tests/bench/run.sh (same body as hello.wasm).

Run: gunicorn -k gevent -w 5 -b 127.0.0.1:PORT --chdir tests/bench wsgi_hello:app
"""

BODY = b"Hello, world!\n"


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]
