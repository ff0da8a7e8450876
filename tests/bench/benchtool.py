#!/usr/bin/env python3
"""Helpers for tests/bench/run.sh (Python 3.11 stdlib only). Each subcommand does one job that is
awkward in bash: millisecond timing, HTTP polling, /proc reading, wrk parsing, the final report.

  free-port                          print a free loopback TCP port
  ready --pid P [--stdout F | --url U] [--path /] [--timeout S]
                                     wait until server P answers 200; print its base URL
  coldstart --pids-file F --out F --err F [--url U] [--env K=V].. -- CMD..
                                     start CMD, print ms from exec to its first 200, stop it
  record FILE [--wrk OUT] [--allow-errors] [--cpu-before F --cpu-after F] KEY=VALUE..
                                     append one JSON result (with parsed wrk figures, and CPU per
                                     request and per-process shares from two `cpu` snapshots) to FILE
  cpu PID                            print the CPU ticks (utime + stime, all threads) of PID and
                                     each of its descendants, as JSON
  machine                            print what the kernel offers the pool's slot reset:
                                     PAGEMAP_SCAN and userfaultfd write-protect, as KEY=VALUE words
  respawn --arbiter P --errlog F --accesslog F --probe URL [--count N] [--interval S] [--record FILE]
                                     kill -9 workers of P, time until a new worker answers
  pss PID [--record FILE] KEY=VALUE..  total PSS (KiB) of PID and all its descendants
  echo-check --url U [--bytes N]     POST N random bytes, require 200 and the same bytes back
  loop --url U --seconds S           GET U one request after another for S seconds
  report FILE                        print the markdown report of the results in FILE (benchreport.py)

Processes that run.sh starts are its own to stop; `coldstart` starts (and always stops) its own,
registering the process group in --pids-file so that run.sh's EXIT trap can also reach it.
"""

import argparse
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse

READY_LINE = re.compile(r"listening on (https?://[0-9.]+:[0-9]+)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def get_status(base: str, path: str, timeout: float) -> int | None:
    """Status of one GET base+path on a fresh connection, or None when it cannot connect/answer."""
    u = urllib.parse.urlsplit(base)
    if u.scheme == "https":
        # The benchmark's own throwaway certificate: not verified.
        conn = http.client.HTTPSConnection(u.hostname, u.port, timeout=timeout,
                                           context=ssl._create_unverified_context())
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def wait_ready(pid, stdout_file, url, path, deadline, interval=0.002, tls=False):
    """Poll until the server answers 200 on path; returns its base URL. Raises on death/timeout.
    With tls, the address from the readiness line is spoken to over https."""
    base = url
    while base is None:
        if stdout_file and os.path.exists(stdout_file):
            with open(stdout_file, errors="replace") as f:
                m = READY_LINE.search(f.read())
            if m:
                base = m.group(1)
                if tls:
                    base = "https://" + base.removeprefix("https://").removeprefix("http://")
                break
        if pid is not None and not alive(pid):
            raise RuntimeError(f"server pid {pid} exited before printing its readiness line")
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for the readiness line")
        time.sleep(0.001)
    last = None
    while True:
        # A connection that reached the listen backlog waits for a worker: let it (bounded).
        last = get_status(base, path, timeout=max(0.05, min(10.0, deadline - time.monotonic())))
        if last == 200:
            return base
        if pid is not None and not alive(pid):
            raise RuntimeError(f"server pid {pid} exited before answering 200 (last status {last})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for a 200 from {base}{path} (last status {last})")
        time.sleep(interval)


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """TERM the process group led by proc, reap proc, then KILL whatever is left of the group."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def cmd_free_port(_a):
    print(free_port())


def cmd_ready(a):
    deadline = time.monotonic() + a.timeout
    try:
        print(wait_ready(a.pid, a.stdout, a.url, a.path, deadline, interval=0.02, tls=a.tls))
    except RuntimeError as e:
        sys.exit(f"benchtool ready: {e}")


def cmd_coldstart(a):
    env = dict(os.environ)
    for kv in a.env:
        k, _, v = kv.partition("=")
        env[k] = v
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    out = open(a.out, "w")
    err = open(a.err, "w")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    with open(a.pids_file, "a") as f:
        f.write(f"{proc.pid}\n")
    try:
        wait_ready(proc.pid, None if a.url else a.out, a.url, a.path, t0 + a.timeout)
        ms = (time.monotonic() - t0) * 1000
        print(f"{ms:.1f}")
    except RuntimeError as e:
        sys.exit(f"benchtool coldstart: {' '.join(cmd)}: {e}")
    finally:
        stop_group(proc)


# ---- wrk ---------------------------------------------------------------------------------------

UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def dur_ms(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"bad wrk duration {text!r}")
    return float(m.group(1)) * UNIT_MS[m.group(2)]


def parse_wrk(text: str) -> dict:
    r = {}
    m = re.search(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M)
    if m:
        r["avg_ms"] = dur_ms(m.group(1))
        r["max_ms"] = dur_ms(m.group(3))
    m = re.search(r"^\s*99%\s+(\S+)", text, re.M)
    if m:
        r["p99_ms"] = dur_ms(m.group(1))
    m = re.search(r"^\s*50%\s+(\S+)", text, re.M)
    if m:
        r["p50_ms"] = dur_ms(m.group(1))
    m = re.search(r"^\s*(\d+) requests in", text, re.M)
    r["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    r["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    r["sock_errors"] = sum(int(x) for x in m.groups()) if m else 0
    r["timeouts"] = int(m.group(4)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    r["non2xx"] = int(m.group(1)) if m else 0
    return r


def parse_h2load(text: str) -> dict:
    """h2load's summary: req/s, requests succeeded/failed, mean time per request (no percentiles)."""
    r = {}
    m = re.search(r"finished in [0-9.]+\w+, ([0-9.]+) req/s", text)
    r["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", text)
    r["requests"] = int(m.group(2)) if m else 0
    r["sock_errors"] = int(m.group(4)) if m else 0
    r["non2xx"] = int(m.group(3)) if m else 0
    m = re.search(r"^time for request:\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M)
    if m:
        r["avg_ms"] = dur_ms(m.group(3))
        r["max_ms"] = dur_ms(m.group(2))
    return r


def value(v: str):
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return v


# ---- CPU per request, and the machine's reset features ---------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of every thread of PID (fields 14 and 15 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def cmd_cpu(a):
    snapshot = {str(p): t for p in descendants(a.pid) if (t := cpu_ticks(p)) is not None}
    print(json.dumps({"root": a.pid, "ticks": snapshot}))


def cpu_figures(before_path: str, after_path: str, requests: int) -> dict:
    """CPU µs per request of the whole process tree between two snapshots, and each process's
    share of it (the root, e.g. rustcorn's arbiter, apart: the shares are its descendants')."""
    with open(before_path) as f:
        before = json.load(f)
    with open(after_path) as f:
        after = json.load(f)
    root = str(after["root"])
    delta = {p: t - before["ticks"].get(p, 0) for p, t in after["ticks"].items()}
    total = sum(delta.values())
    out = {"cpu_us_per_req": total * 1e6 / CLK_TCK / requests if requests else None,
           "cpu_ticks": total}
    children_ticks = sorted((t for p, t in delta.items() if p != root), reverse=True)
    if len(children_ticks) >= 2 and sum(children_ticks):
        out["worker_ticks"] = children_ticks
        out["top_worker_share"] = children_ticks[0] / sum(children_ticks)
    return out


PAGEMAP_SCAN = 0xC0606610   # _IOWR('f', 16, struct pm_scan_arg), 96 bytes
PAGE_IS_PRESENT = 1 << 3
UFFDIO_API = 0xC018AA3F     # _IOWR(0xAA, 0x3F, struct uffdio_api), 24 bytes
UFFD_FEATURE_WP_ASYNC = 1 << 15


def pagemap_scan_works() -> bool:
    """Whether the PAGEMAP_SCAN ioctl (Linux 6.7+) answers, probed the way wasmtime does."""
    import fcntl
    import struct
    arg = bytearray(struct.pack("=12Q", 96, 0, 0, 0, 0, 0, 0, 1, 0, PAGE_IS_PRESENT, 0, 0))
    try:
        with open("/proc/self/pagemap", "rb") as f:
            fcntl.ioctl(f.fileno(), PAGEMAP_SCAN, arg)
        return True
    except OSError:
        return False


def userfaultfd_wp_async() -> str:
    """Whether this process may open a userfaultfd and the kernel offers async write-protect."""
    import ctypes
    import fcntl
    import struct
    libc = ctypes.CDLL(None, use_errno=True)
    sys_userfaultfd = {"x86_64": 323, "aarch64": 282}.get(os.uname().machine)
    if sys_userfaultfd is None:
        return "unknown-arch"
    fd = libc.syscall(sys_userfaultfd, os.O_CLOEXEC | 1)   # UFFD_USER_MODE_ONLY
    if fd < 0:
        return f"unavailable({os.strerror(ctypes.get_errno())})"
    try:
        arg = bytearray(struct.pack("=3Q", 0xAA, 0, 0))
        fcntl.ioctl(fd, UFFDIO_API, arg)
        features = struct.unpack("=3Q", arg)[1]
        return "yes" if features & UFFD_FEATURE_WP_ASYNC else "no-wp-async"
    except OSError as e:
        return f"unavailable({e.strerror})"
    finally:
        os.close(fd)


def cmd_machine(_a):
    print(f"pagemap_scan={'yes' if pagemap_scan_works() else 'no'} uffd_wp_async={userfaultfd_wp_async()}")


def cmd_record(a):
    rec = {}
    for kv in a.kv:
        k, _, v = kv.partition("=")
        rec[k] = value(v)
    problems = []
    if a.h2load:
        with open(a.h2load, errors="replace") as f:
            w = parse_h2load(f.read())
        rec.update(w)
        if w["requests"] == 0:
            problems.append(f"h2load made no successful request ({a.h2load})")
        if w["non2xx"] or w["sock_errors"]:
            problems.append(f"{w['non2xx']} failed and {w['sock_errors']} errored requests")
        print(f"  {rec.get('server', '?')} {rec.get('workload', '')}: {w['rps']:.0f} req/s, avg "
              f"{w.get('avg_ms', float('nan')):.2f} ms", file=sys.stderr)
    if a.wrk:
        with open(a.wrk, errors="replace") as f:
            text = f.read()
        w = parse_wrk(text)
        rec.update(w)
        if w["requests"] == 0 or "p99_ms" not in w:
            problems.append(f"wrk made no successful request ({a.wrk})")
        if w["non2xx"] and not a.allow_errors:
            problems.append(f"{w['non2xx']} non-2xx responses")
        summary = (f"{rec.get('server', '?')} {rec.get('workload', '')}: {w['rps']:.0f} req/s, avg "
                   f"{w.get('avg_ms', float('nan')):.2f} ms, p99 {w.get('p99_ms', float('nan')):.2f} ms, "
                   f"{w['non2xx']} non-2xx, {w['sock_errors']} socket errors")
        if a.cpu_before and a.cpu_after:
            rec.update(cpu_figures(a.cpu_before, a.cpu_after, w["requests"]))
            if rec.get("cpu_us_per_req") is not None:
                summary += f", {rec['cpu_us_per_req']:.0f} µs CPU/req"
            if "top_worker_share" in rec:
                summary += f", busiest worker {100 * rec['top_worker_share']:.0f} %"
        print("  " + summary, file=sys.stderr)
    with open(a.file, "a") as f:
        f.write(json.dumps(rec) + "\n")
    if problems:
        sys.exit(f"benchtool record: {rec.get('server', '?')} {rec.get('workload', '')}: " + "; ".join(problems))


# ---- respawn -----------------------------------------------------------------------------------

def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


class Tail:
    """Reads the lines appended to a file since it was opened."""

    def __init__(self, path: str):
        self.f = open(path, "rb")
        self.f.seek(0, os.SEEK_END)
        self.buf = b""

    def lines(self) -> list[str]:
        self.buf += self.f.read()
        *done, self.buf = self.buf.split(b"\n")
        return [line.decode(errors="replace") for line in done]


def one_respawn(arbiter: int, errlog: str, accesslog: str, probe: str, timeout: float, window: float) -> dict:
    """kill -9 one worker of the arbiter, then time: the new worker's fork (its pid in /proc), its
    "Worker ready" log line, and the first response it serves. Load generators keep their
    connections alive on the surviving workers, so once the new pid exists this sends fresh
    probe connections (GET probe, Connection: close) until the access log shows one served by the
    new pid. Then it counts, over `window` seconds, the share of all requests the new pid serves."""
    before = children(arbiter)
    if not before:
        raise RuntimeError(f"arbiter {arbiter} has no worker")
    victim = before[0]
    err_tail, acc_tail = Tail(errlog), Tail(accesslog)
    t0 = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    res = {"victim": victim}
    new = None
    ready_re = None
    while time.monotonic() - t0 < timeout:
        now_ms = (time.monotonic() - t0) * 1000
        if new is None:
            fresh = [c for c in children(arbiter) if c not in before]
            if fresh:
                new = fresh[0]
                res["new_pid"] = new
                res["child_ms"] = now_ms
                ready_re = re.compile(rf"Worker ready \(pid: {new}\b")
        if new is not None:
            if "ready_ms" not in res and any(ready_re.search(line) for line in err_tail.lines()):
                res["ready_ms"] = now_ms
            if "first_ms" not in res and any(line.split(" ", 1)[0].strip("<>") == str(new) for line in acc_tail.lines()):
                res["first_ms"] = now_ms
            if "ready_ms" in res and "first_ms" in res:
                break
            if "first_ms" not in res:
                get_status(base_of(probe), path_of(probe), timeout=5.0)
                res["probes"] = res.get("probes", 0) + 1
                continue
        time.sleep(0.0005)
    else:
        raise RuntimeError(f"no new worker answered within {timeout}s after killing {victim}: {res}")
    # How much of the running load reaches the new worker afterwards.
    end, mine, total = time.monotonic() + window, 0, 0
    while time.monotonic() < end:
        for line in acc_tail.lines():
            total += 1
            mine += line.split(" ", 1)[0].strip("<>") == str(new)
        time.sleep(0.01)
    res["share_after"] = mine / total if total else 0.0
    return res


def cmd_respawn(a):
    out = []
    for i in range(a.count):
        if i:
            time.sleep(a.interval)
        try:
            r = one_respawn(a.arbiter, a.errlog, a.accesslog, a.probe, a.timeout, a.window)
        except RuntimeError as e:
            sys.exit(f"benchtool respawn: {e}")
        print(f"  respawn {i + 1}: killed {r['victim']}, new worker {r['new_pid']}: forked after "
              f"{r['child_ms']:.1f} ms, ready after {r['ready_ms']:.1f} ms, first response after "
              f"{r['first_ms']:.1f} ms ({r.get('probes', 0)} probe requests); then it served "
              f"{100 * r['share_after']:.1f}% of the load over {a.window:.1f} s", file=sys.stderr)
        out.append(r)
        if a.record:
            with open(a.record, "a") as f:
                f.write(json.dumps({"t": "respawn", **r}) + "\n")


# ---- memory ------------------------------------------------------------------------------------

def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children(p))
    return out


def pss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise RuntimeError(f"no Pss line for pid {pid}")


def cmd_pss(a):
    procs = {}
    for p in descendants(a.pid):
        try:
            procs[p] = pss_kib(p)
        except (FileNotFoundError, ProcessLookupError):
            pass
    rec = {k: value(v) for k, _, v in (kv.partition("=") for kv in a.kv)}
    rec.update({"total_kib": sum(procs.values()), "procs": len(procs),
                "per_proc_kib": [procs[p] for p in sorted(procs)]})
    print(json.dumps(rec))
    if a.record:
        with open(a.record, "a") as f:
            f.write(json.dumps(rec) + "\n")


# ---- echo check --------------------------------------------------------------------------------

def cmd_echo_check(a):
    body = os.urandom(a.bytes)
    u = urllib.parse.urlsplit(a.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.request("POST", path_of(a.url), body=body, headers={"Content-Type": "application/octet-stream"})
        resp = conn.getresponse()
        got = resp.read()
    finally:
        conn.close()
    if resp.status != 200 or got != body:
        sys.exit(f"benchtool echo-check: {a.url}: status {resp.status}, {len(got)} bytes back for "
                 f"{len(body)} sent{'' if got == body else ' (not the same bytes)'}")


# ---- spin client -------------------------------------------------------------------------------

def cmd_loop(a):
    end = time.monotonic() + a.seconds
    statuses: dict[str, int] = {}
    n = 0
    while time.monotonic() < end and n < a.max:
        s = get_status(base_of(a.url), path_of(a.url), timeout=a.timeout)
        statuses[str(s)] = statuses.get(str(s), 0) + 1
        n += 1
    print(json.dumps({"count": n, "statuses": statuses}))


def base_of(url: str) -> str:
    u = urllib.parse.urlsplit(url)
    return f"{u.scheme}://{u.netloc}"


def path_of(url: str) -> str:
    u = urllib.parse.urlsplit(url)
    return u.path + (f"?{u.query}" if u.query else "")


# ---- report ------------------------------------------------------------------------------------

def cmd_report(a):
    import benchreport  # next to this file (the script's directory is on sys.path)
    print(benchreport.report(a.file))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("free-port").set_defaults(fn=cmd_free_port)

    s = sub.add_parser("ready")
    s.add_argument("--pid", type=int)
    s.add_argument("--stdout")
    s.add_argument("--url")
    s.add_argument("--path", default="/")
    s.add_argument("--timeout", type=float, default=120)
    s.add_argument("--tls", action="store_true", help="speak https to the readiness line's address")
    s.set_defaults(fn=cmd_ready)

    s = sub.add_parser("coldstart")
    s.add_argument("--pids-file", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--err", required=True)
    s.add_argument("--url")
    s.add_argument("--path", default="/")
    s.add_argument("--env", action="append", default=[])
    s.add_argument("--timeout", type=float, default=300)
    s.add_argument("cmd", nargs=argparse.REMAINDER)
    s.set_defaults(fn=cmd_coldstart)

    s = sub.add_parser("record")
    s.add_argument("file")
    s.add_argument("--wrk")
    s.add_argument("--h2load")
    s.add_argument("--allow-errors", action="store_true")
    s.add_argument("--cpu-before")
    s.add_argument("--cpu-after")
    s.add_argument("kv", nargs="*")
    s.set_defaults(fn=cmd_record)
    s = sub.add_parser("cpu")
    s.add_argument("pid", type=int)
    s.set_defaults(fn=cmd_cpu)
    sub.add_parser("machine").set_defaults(fn=cmd_machine)

    s = sub.add_parser("respawn")
    s.add_argument("--arbiter", type=int, required=True)
    s.add_argument("--errlog", required=True)
    s.add_argument("--accesslog", required=True)
    s.add_argument("--count", type=int, default=1)
    s.add_argument("--interval", type=float, default=2.0)
    s.add_argument("--probe", required=True, help="URL to GET on fresh connections")
    s.add_argument("--window", type=float, default=1.0)
    s.add_argument("--timeout", type=float, default=30.0)
    s.add_argument("--record")
    s.set_defaults(fn=cmd_respawn)

    s = sub.add_parser("pss")
    s.add_argument("pid", type=int)
    s.add_argument("--record")
    s.add_argument("kv", nargs="*")
    s.set_defaults(fn=cmd_pss)

    s = sub.add_parser("echo-check")
    s.add_argument("--url", required=True)
    s.add_argument("--bytes", type=int, default=65536)
    s.set_defaults(fn=cmd_echo_check)

    s = sub.add_parser("loop")
    s.add_argument("--url", required=True)
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--max", type=int, default=1000)
    s.add_argument("--timeout", type=float, default=60.0)
    s.set_defaults(fn=cmd_loop)

    s = sub.add_parser("report")
    s.add_argument("file")
    s.set_defaults(fn=cmd_report)

    # KEY=VALUE words may follow options (argparse would not take them as positionals there).
    a, extra = p.parse_known_args()
    if extra:
        if not hasattr(a, "kv") or any(x.startswith("-") or "=" not in x for x in extra):
            p.error(f"unrecognized arguments: {' '.join(extra)}")
        a.kv += extra
    a.fn(a)


if __name__ == "__main__":
    main()
