#!/usr/bin/env python3
"""What a client sees once a worker takes no more connections: N clients connect at once, each
sends GET PATH (Connection: close); prints, per client, the connect time and the status/latency,
plus the listen-queue gauge scraped from the admin endpoint while they wait.

usage: listen_queue.py APP_HOST:PORT ADMIN_HOST:PORT PATH N
"""
import json
import socket
import sys
import threading
import time
import urllib.request

app, admin, path, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
host, port = app.rsplit(":", 1)
results = [None] * n


def client(i):
    start = time.time()
    try:
        s = socket.create_connection((host, int(port)), timeout=30)
        connected = time.time() - start
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {app}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        results[i] = {"connect_ms": round(connected * 1000), "status": int(data.split(b" ", 2)[1]),
                      "total_ms": round((time.time() - start) * 1000)}
    except Exception as e:
        results[i] = {"error": type(e).__name__, "after_ms": round((time.time() - start) * 1000)}


threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
for t in threads:
    t.start()
time.sleep(0.5)
metrics = urllib.request.urlopen(f"http://{admin}/metrics").read().decode()
queue = [l for l in metrics.splitlines() if l.startswith("rustcorn_listen_queue")]
for t in threads:
    t.join()
print(json.dumps({"listen_queue_at_0.5s": queue}))
for r in results:
    print(json.dumps(r))
