"""The markdown report of a tests/bench/run.sh results file (JSON lines; Python 3.11 stdlib only).

Throughput comparisons come from alternating rounds: records {"t": "wrk", "round": N, ...} (one per
server and round) and {"t": "round", ...} (the round's order and 1-minute load average). Each
ratio is rustcorn ÷ peer within one round; a summary takes the median of those per-round ratios.
"""

import json
import statistics

# The label run.sh gives `wasmtime serve --max-instance-reuse-count 1000`.
REUSE_LABEL = "wasmtime serve reuse 1000"

# (comparison, workload, peer, metric, goal): goal is (">=", x), ("<=", x) or None.
TARGETS = [
    ("hello req/s, rustcorn ÷ `wasmtime serve`", "hello", "wasmtime serve", "rps", (">=", 5.0)),
    ("Python app GET / req/s, rustcorn ÷ `wasmtime serve`", "python-app GET /", "wasmtime serve", "rps",
     (">=", 5.0)),
    ("JS app GET / req/s, rustcorn ÷ `wasmtime serve`", "js-app GET /", "wasmtime serve", "rps", (">=", 6.0)),
    ("hello p99, rustcorn ÷ `wasmtime serve --max-instance-reuse-count 1000`", "hello", REUSE_LABEL, "p99_ms",
     ("<=", 1.5)),
    ("hello CPU per request, rustcorn ÷ `wasmtime serve`", "hello", "wasmtime serve", "cpu_us_per_req",
     ("<=", 1 / 3)),
    ("Python app CPU per request, rustcorn ÷ `wasmtime serve`", "python-app GET /", "wasmtime serve",
     "cpu_us_per_req", ("<=", 0.25)),
    ("JS app CPU per request, rustcorn ÷ `wasmtime serve`", "js-app GET /", "wasmtime serve", "cpu_us_per_req",
     ("<=", 0.25)),
    ("hello req/s, rustcorn ÷ native hyper (no wasm: the ceiling)", "hello", "native hyper", "rps", None),
    ("hello req/s, rustcorn ÷ Gunicorn gevent (Python WSGI hello)", "hello", "gunicorn gevent", "rps", None),
]


def fmt(x, nd=2):
    if x is None or (isinstance(x, float) and x != x):
        return "—"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{nd}f}"


def fx(x):
    return "—" if x is None else f"{x:.2f}×"


def ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs):
    xs = [x for x in xs if x is not None]
    return f"{min(xs):.2f}–{max(xs):.2f}×" if xs else "—"


def table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(lines)


class Rounds:
    """The alternating-round records of one workload."""

    def __init__(self, workload, wrk, meta_rounds):
        self.workload = workload
        self.by = {(r["round"], r["server"]): r for r in wrk}
        self.meta = {r["round"]: r for r in meta_rounds}
        self.rounds = sorted({r["round"] for r in wrk} | set(self.meta))
        seen = list(dict.fromkeys(r["server"] for r in sorted(wrk, key=lambda r: r["round"])))
        self.peers = [s for s in seen if s != "rustcorn"]
        self.servers = ["rustcorn"] + self.peers

    def get(self, n, server, key):
        return self.by.get((n, server), {}).get(key)

    def ratios(self, peer, key):
        """rustcorn ÷ peer for each round (None where either run is missing)."""
        return [ratio(self.get(n, "rustcorn", key), self.get(n, peer, key)) for n in self.rounds]

    def median_ratio(self, peer, key):
        return median(self.ratios(peer, key))

    def measured(self, peer, key):
        return sum(x is not None for x in self.ratios(peer, key))


def server_cell(rec):
    if not rec:
        return "failed"
    cell = f"{fmt(rec.get('rps'), 0)} / {fmt(rec.get('p99_ms'))} ms"
    errs = rec.get("sock_errors", 0)
    return cell + (f" ({errs} sock err)" if errs else "")


def ratio_cell(r_rps, r_p99):
    return f"{fx(r_rps)} / {fx(r_p99)}"


def rounds_section(wrk, round_meta, n_rounds):
    out = ["## Throughput and latency: alternating rounds\n",
           f"{n_rounds} round(s). In each round every server of a workload is started fresh, warmed up "
           "and loaded once, one after the other; rustcorn runs first in odd rounds and last in even "
           "rounds (the peers then in reverse order). Server cells: req/s / p99. Ratio cells: "
           "rustcorn ÷ peer within the round, req/s ratio / p99 ratio (above 1 is better for req/s, below 1 "
           "for p99). The **median** row gives each server's median req/s and median p99 over the rounds, "
           "and for the ratios the **median of the per-round ratios** (not the ratio of the medians); the "
           "spread row gives their min–max. Load: the 1-minute load average at the start and end of "
           "the round.\n"]
    workloads = list(dict.fromkeys(r["workload"] for r in wrk))
    all_rounds = {}
    for wl in workloads:
        rd = Rounds(wl, [r for r in wrk if r["workload"] == wl], [m for m in round_meta if m["workload"] == wl])
        all_rounds[wl] = rd
        headers = ["round", "load start → end", "order"] + rd.servers + [f"÷ {p}" for p in rd.peers]
        rows = []
        for n in rd.rounds:
            m = rd.meta.get(n, {})
            order = m.get("order", "")
            first = "—" if not rd.peers else ("rustcorn first" if order.startswith("rustcorn") else "rustcorn last")
            rows.append([n, f"{m.get('load_start', '?')} → {m.get('load_end', '?')}", first]
                        + [server_cell(rd.by.get((n, s))) for s in rd.servers]
                        + [ratio_cell(ratio(rd.get(n, "rustcorn", "rps"), rd.get(n, p, "rps")),
                                      ratio(rd.get(n, "rustcorn", "p99_ms"), rd.get(n, p, "p99_ms")))
                           for p in rd.peers])
        med_cells = []
        for s in rd.servers:
            rps = median(rd.get(n, s, "rps") for n in rd.rounds)
            p99 = median(rd.get(n, s, "p99_ms") for n in rd.rounds)
            k = sum((n, s) in rd.by for n in rd.rounds)
            med_cells.append(f"**{fmt(rps, 0)}** / {fmt(p99)} ms" + (f" (n={k})" if k != len(rd.rounds) else ""))
        rows.append(["**median**", "", ""] + med_cells
                    + [ratio_cell(rd.median_ratio(p, "rps"), rd.median_ratio(p, "p99_ms")) for p in rd.peers])
        if rd.peers:
            rows.append(["spread", "", "", *([""] * len(rd.servers))]
                        + [f"{spread(rd.ratios(p, 'rps'))} / {spread(rd.ratios(p, 'p99_ms'))}" for p in rd.peers])
        out.append(f"### {wl}\n")
        out.append(table(headers, rows))
        out.append("")
        out += cpu_table(rd)
    out.append(targets_section(all_rounds))
    return out


def share_percent(share):
    return None if share is None else 100 * share


def share_cell(rec):
    ticks = rec.get("worker_ticks") if rec else None
    if not ticks:
        return "—"
    return f"{share_percent(rec['top_worker_share']):.0f} % ({' / '.join(str(t) for t in ticks)} ticks)"


def cpu_table(rd):
    """CPU µs per request of each server's whole process tree per round, the rustcorn ÷ peer
    ratios (below 1: rustcorn spends less), and how rustcorn's CPU split over its workers."""
    if not any(r.get("cpu_us_per_req") is not None for r in rd.by.values()):
        return []
    headers = (["round"] + [f"{s} µs" for s in rd.servers] + [f"÷ {p}" for p in rd.peers]
               + ["rustcorn busiest worker"])
    rows = []
    for n in rd.rounds:
        rows.append([n] + [fmt(rd.get(n, s, "cpu_us_per_req"), 0) for s in rd.servers]
                    + [fx(ratio(rd.get(n, "rustcorn", "cpu_us_per_req"), rd.get(n, p, "cpu_us_per_req")))
                       for p in rd.peers]
                    + [share_cell(rd.by.get((n, "rustcorn")))])
    rows.append(["**median**"] + [f"**{fmt(median(rd.get(n, s, 'cpu_us_per_req') for n in rd.rounds), 0)}**"
                                  for s in rd.servers]
                + [fx(rd.median_ratio(p, "cpu_us_per_req")) for p in rd.peers]
                + [f"{fmt(median(share_percent(rd.get(n, 'rustcorn', 'top_worker_share')) for n in rd.rounds), 0)} %"])
    return [f"CPU per request ({rd.workload}): utime + stime of the server's process tree over the "
            "measured run ÷ its requests; the busiest worker's share of rustcorn's worker CPU "
            "(an even split is 100 % ÷ workers).\n", table(headers, rows), ""]


def targets_section(all_rounds):
    rows = []
    for label, wl, peer, key, goal in TARGETS:
        rd = all_rounds.get(wl)
        n = rd.measured(peer, key) if rd else 0
        if not n:
            rows.append([label, "not measured", "—", 0, goal_text(goal), "—"])
            continue
        med = rd.median_ratio(peer, key)
        met = "—"
        if goal:
            ok = med >= goal[1] if goal[0] == ">=" else med <= goal[1]
            met = "met" if ok else "**not met**"
        rows.append([label, f"**{fx(med)}**", spread(rd.ratios(peer, key)), n, goal_text(goal), met])
    return ("## Targets\n\nFrom the medians of the per-round ratios above (the targets of issue 12: rustcorn "
            "with its defaults, a fresh instance per request; `wasmtime serve` likewise unless the row names "
            "instance reuse; at the connection count of the `wrk` command in the header).\n\n"
            + table(["comparison", "median of per-round ratios", "spread (min–max)", "rounds", "target", "met"],
                    rows) + "\n")


def goal_text(goal):
    if not goal:
        return "—"
    return f"{'≥' if goal[0] == '>=' else '≤'} {goal[1]:.2g}×"


def warmup_text(seconds):
    return "with no warm-up" if seconds == 0 else f"after a {seconds} s warm-up (same command)"


def header(meta):
    return [
        f"# rustcorn benchmark ({meta.get('mode', '?')} mode, {meta.get('date', '')})\n",
        f"- Machine: {meta.get('nproc')} CPUs, {meta.get('cpu')}, Linux {meta.get('kernel')}, {meta.get('mem')}; "
        f"PAGEMAP_SCAN {meta.get('pagemap_scan', '?')} (the pool resets slots with it when yes), userfaultfd "
        f"async write-protect {meta.get('uffd_wp_async', '?')} (wasmtime 48 does not use it)",
        f"- rustcorn {meta.get('rev')}; {meta.get('wasmtime', 'wasmtime serve: not run')}; "
        f"{meta.get('wrk')}; {meta.get('gunicorn', 'gunicorn: not run')}",
        f"- Load: `{meta.get('wrk_cmd')}` {warmup_text(meta.get('warmup'))}, on loopback, client and "
        f"server on the same {meta.get('nproc')} CPUs; rustcorn `-w {meta.get('workers')}`, native hyper "
        f"{meta.get('workers')} threads, gunicorn `-k gevent -w 5`, wasmtime serve `-Scli -W timeout=30s` "
        f"(and `{REUSE_LABEL}`: `--max-instance-reuse-count 1000`); {meta.get('rounds', '?')} alternating "
        "round(s) per throughput comparison.",
        f"- Load average (1, 5, 15 min) at start: {meta.get('load_start')}; at end: {meta.get('load_end')}. "
        f"Anything else running on the {meta.get('nproc')} CPUs skews every figure: ratios are taken within a "
        "round, and single runs compare only with rows of the same run.",
        "- Ratios are rustcorn ÷ peer: above 1 is better for req/s, below 1 is better for latency, time and "
        "memory.\n",
    ]


def single_runs_section(single):
    out = ["## TLS and HTTP/2 (rustcorn hello, single runs after the rounds)\n"]
    rows = [[r["workload"], r["server"], fmt(r.get("rps"), 0), fmt(r.get("avg_ms")), fmt(r.get("p99_ms")),
             f"{r.get('non2xx', 0)}/{r.get('sock_errors', 0)}"] for r in single]
    out.append(table(["workload", "server", "req/s", "avg ms", "p99 ms", "non-2xx/sock err"], rows))
    out.append("\nCompare with the plain hello rows of the rounds above (h2load reports no p99).\n")
    return out


def cold_section(cold):
    out = ["## Cold start: exec → first 200 (median of runs, ms)\n"]
    rows = []
    for app in dict.fromkeys(r["app"] for r in cold):
        def med(server, cache):
            v = [r["ms"] for r in cold if r["app"] == app and r["server"] == server and r["cache"] == cache]
            return (statistics.median(v), len(v)) if v else (None, 0)
        for s in dict.fromkeys(r["server"] for r in cold if r["app"] == app):
            e, ne = med(s, "empty")
            w, nw = med(s, "warm")
            peer = s != "rustcorn"
            re_, _ = med("rustcorn", "empty")
            rw, _ = med("rustcorn", "warm")
            rows.append([app, s, f"{fmt(e, 1)} (n={ne})", f"{fmt(w, 1)} (n={nw})",
                         fmt(ratio(re_, e)) if peer else "—", fmt(ratio(rw, w)) if peer else "—"])
    out.append(table(["app", "server", "empty cache", "warm cache", "empty ratio", "warm ratio"], rows))
    out.append("")
    return out


def respawn_section(resp, recs):
    out = ["## Respawn after kill -9 of a worker under load (rustcorn hello, ms)\n"]
    rows = []
    for key, label in (("child_ms", "new worker forked (in /proc children)"),
                       ("ready_ms", "\"Worker ready (pid: N\" logged"),
                       ("first_ms", "first response served by the new pid (access log)")):
        v = [r[key] for r in resp if key in r]
        rows.append([label, fmt(statistics.median(v), 1), fmt(max(v), 1), len(v)])
    out.append(table(["milestone after the kill", "median ms", "max ms", "kills"], rows))
    shares = [r["share_after"] for r in resp if "share_after" in r]
    if shares:
        out.append(f"\nShare of the running wrk load served by the new worker in the second after its "
                   f"first response: {', '.join(f'{100 * x:.1f}%' for x in shares)} (wrk's keep-alive "
                   "connections move to it as `--keep-alive-max-requests` closes each one after its "
                   "1000th request; tests/bench/rebalance.sh measures that). The first response is to a "
                   "probe on a fresh connection.")
    rw = next((r for r in recs if r.get("t") == "wrk-respawn"), None)
    if rw:
        out.append(f"\nThe wrk run around the kills: {fmt(rw.get('rps'), 0)} req/s, p99 "
                   f"{fmt(rw.get('p99_ms'))} ms, {rw.get('non2xx', 0)} non-2xx, "
                   f"{rw.get('sock_errors', 0)} socket errors (connections of the killed worker).")
    out.append("")
    return out


def pss_section(pss):
    out = ["## Memory: total PSS after warm-up (Python app)\n"]
    rows = []
    base1 = next((r for r in pss if r["server"] == "rustcorn" and r["workers"] == 1), None)
    for r in pss:
        per = r.get("per_proc_kib", [])
        rows.append([r["server"], r["workers"], r["procs"], fmt(r["total_kib"] / 1024, 1),
                     ", ".join(f"{k / 1024:.1f}" for k in per),
                     fmt(ratio(base1 and base1["total_kib"], r["total_kib"]))
                     if r["server"] != "rustcorn" and base1 else "—"])
    out.append(table(["server", "workers", "processes", "total PSS MiB", "per process MiB (pid order)",
                      "ratio (rustcorn -w 1 ÷ peer)"], rows))
    out.append("")
    return out


def fair_section(fair):
    out = ["## Fairness: faults.wasm `/ok` under wrk, alone vs. while one client loops "
           f"`/spin?ms={fair[0].get('spin_ms', '?')}`\n"]
    rows = []
    servers = list(dict.fromkeys(r["server"] for r in fair))
    get = {(r["server"], r["phase"]): r for r in fair}
    for s in servers:
        alone, spin = get.get((s, "alone"), {}), get.get((s, "spin"), {})
        rows.append([s, fmt(alone.get("rps"), 0), fmt(alone.get("p99_ms")), fmt(spin.get("rps"), 0),
                     fmt(spin.get("p99_ms")), fmt(spin.get("max_ms")), spin.get("spins", "—"),
                     f"{spin.get('non2xx', 0)}/{spin.get('sock_errors', 0)}"])
    out.append(table(["server", "req/s alone", "p99 ms alone", "req/s with spin", "p99 ms with spin",
                      "max ms with spin", "spins done", "non-2xx/sock err"], rows))
    rs = get.get(("rustcorn", "spin"))
    for s in servers:
        if s != "rustcorn" and rs and get.get((s, "spin")):
            out.append(f"\np99 with spin, rustcorn ÷ {s}: {fmt(ratio(rs.get('p99_ms'), get[(s, 'spin')].get('p99_ms')))}")
    out.append("")
    return out


def report(path: str) -> str:
    with open(path) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    of = lambda t: [r for r in recs if r.get("t") == t]  # noqa: E731
    out = []
    meta = {k: v for r in of("meta") for k, v in r.items() if k != "t"}
    if meta:
        out += header(meta)
    wrk = of("wrk")
    in_rounds = [r for r in wrk if "round" in r]
    if in_rounds or of("round"):
        out += rounds_section(in_rounds, of("round"), meta.get("rounds", len({r["round"] for r in in_rounds})))
    single = [r for r in wrk if "round" not in r]
    if single:
        out += single_runs_section(single)
    if of("cold"):
        out += cold_section(of("cold"))
    if of("respawn"):
        out += respawn_section(of("respawn"), recs)
    if of("pss"):
        out += pss_section(of("pss"))
    if of("fair"):
        out += fair_section(of("fair"))
    if of("fail"):
        out.append("## Failures\n")
        out += [f"- {r['step']}: {r.get('msg', '')}" for r in of("fail")]
        out.append("")
    return "\n".join(out)
