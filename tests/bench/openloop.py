"""Open-loop latency probe: sends GET PATH at a fixed RATE (req/s) for SECONDS over THREADS
keep-alive connections and prints p50/p90/p99/max in ms, each latency counted from the request's
scheduled send time (so a slow server cannot hide queueing: no coordinated omission).

Usage: python3 tests/bench/openloop.py HOST PORT PATH RATE SECONDS THREADS
Used for the "latency at about half capacity" figures (wrk only measures closed loops).
"""
import http.client
import sys
import threading
import time


def main() -> None:
    host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rate, seconds, threads = float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()

    def client(offset: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        interval = threads / rate
        start = time.perf_counter() + 0.2 + offset * interval / threads
        n = 0
        while n * interval <= seconds:
            due = start + n * interval
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn = http.client.HTTPConnection(host, port, timeout=10)
            with lock:
                if ok:
                    latencies.append((time.perf_counter() - due) * 1000)
                else:
                    errors[0] += 1
            n += 1

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    latencies.sort()
    if not latencies:
        print(f"n=0 err={errors[0]}")
        sys.exit(1)
    q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))]
    print(f"n={len(latencies)} err={errors[0]} p50={q(0.5):.2f} p90={q(0.9):.2f} p99={q(0.99):.2f} max={latencies[-1]:.2f}")


if __name__ == "__main__":
    main()
