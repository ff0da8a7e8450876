#!/usr/bin/env python3
"""Overload scenario for --max-queue-time: a proxy-like client.

Requests arrive open-loop at RATE per second (they do not wait for earlier ones), queue in the
client like in a proxy allowed POOL concurrent upstream requests (one connection each), and are stamped
`X-Request-Start: t=<arrival, microseconds>` when they arrive. Latency counts from arrival, so
time spent queued in the "proxy" counts. A request whose response takes longer than PATIENCE
seconds is one the end user gave up on: useful throughput counts only 200s within PATIENCE.

usage: queue_shed.py HOST:PORT PATH RATE SECONDS [POOL] [PATIENCE]
prints one JSON line: sent, ok, ok_in_time, shed_503, other, errors, p50_ms, p99_ms, useful_rps
"""
import asyncio
import json
import sys
import time


async def one(host, port, path, arrival):
    """One request on its own connection (Connection: close), read to EOF."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        stamp = int(arrival * 1_000_000)
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nX-Request-Start: t={stamp}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        response = await reader.read()
        return int(response.split(b" ", 2)[1])
    finally:
        writer.close()


async def main():
    addr, path, rate, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    pool = int(sys.argv[5]) if len(sys.argv) > 5 else 32
    patience = float(sys.argv[6]) if len(sys.argv) > 6 else 3.0
    host, port = addr.rsplit(":", 1)
    queue: asyncio.Queue = asyncio.Queue()
    results = []  # (status or None, latency seconds)

    async def upstream():
        while True:
            arrival = await queue.get()
            if arrival is None:
                return
            try:
                status = await asyncio.wait_for(one(host, int(port), path, arrival), timeout=30)
                results.append((status, time.time() - arrival))
            except Exception:
                results.append((None, time.time() - arrival))

    workers = [asyncio.create_task(upstream()) for _ in range(pool)]
    start = time.time()
    sent = 0
    while True:
        now = time.time()
        due = int((now - start) * rate)
        if now - start >= seconds:
            break
        while sent < due:
            queue.put_nowait(start + sent / rate)
            sent += 1
        await asyncio.sleep(0.002)
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    latencies = sorted(lat for _, lat in results)
    pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1) if latencies else None
    ok = [lat for status, lat in results if status == 200]
    ok_in_time = [lat for lat in ok if lat <= patience]
    print(json.dumps({
        "rate": rate, "sent": sent,
        "ok": len(ok), "ok_in_time": len(ok_in_time),
        "shed_503": sum(1 for s, _ in results if s == 503),
        "other": sum(1 for s, _ in results if s not in (200, 503, None)),
        "errors": sum(1 for s, _ in results if s is None),
        "p50_ms": pick(0.50), "p99_ms": pick(0.99),
        "ok_p99_ms": round(sorted(ok)[int(0.99 * len(ok))] * 1000, 1) if ok else None,
        "useful_rps": round(len(ok_in_time) / (time.time() - start), 1),
    }))


asyncio.run(main())
