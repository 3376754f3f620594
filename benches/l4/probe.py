#!/usr/bin/env python3
"""Looks inside one proxy under one of the bench's loads, to find out why a
figure of bench.py is what it is. Same lab as bench.py (same configs, cores and
ports); each probe prints one line per measurement.

    probe.py --tandem BIN syscalls [--targets tandem,nginx]
        system calls per connection (strace -c -f) under short connections
    probe.py --tandem BIN sleeps [--targets ...] [--rounds N]
        voluntary context switches (times the proxy slept) per request or
        connection, CPU per request and each core's busy share
    probe.py --tandem BIN splices [--targets tandem,haproxy-splice] [--streams 4] [--rounds N]
        splice and epoll_wait calls per GB moved (perf tracepoints)

strace and perf slow the proxy down while they watch it: compare their counts,
not their rates, with bench.py's.
"""

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def context_switches(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
                out[key] = int(value)
    return out["voluntary_ctxt_switches"], out["nonvoluntary_ctxt_switches"]


def probe_syscalls(lab, targets, out_dir):
    for t in targets:
        pid = lab.pid(t)
        trace = os.path.join(out_dir, f"strace-{t}.txt")
        tracer = subprocess.Popen(["strace", "-f", "-c", "-p", str(pid), "-o", trace], stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        load = bench.run_load(["wrk", "-t1", "-c10", "-d2s", "--latency", "-H", "Connection: close",
                               f"http://127.0.0.1:{bench.PORTS[t][1]}/"], 30)
        tracer.send_signal(2)
        tracer.wait(timeout=30)
        conns = bench.parse_wrk(load)["requests"]
        calls = []
        with open(trace) as f:
            for line in f:
                fields = line.split()
                # % time, seconds, usecs/call, calls, [errors,] syscall
                if len(fields) >= 5 and fields[3].isdigit() and fields[-1] != "total":
                    calls.append((fields[-1], int(fields[3]) / conns))
        calls.sort(key=lambda c: -c[1])
        total = sum(n for _, n in calls)
        print(f"{t}: {conns} connections, {total:.2f} system calls per connection: "
              + ", ".join(f"{name} {n:.2f}" for name, n in calls if n >= 0.005), flush=True)


def probe_sleeps(lab, targets, rounds):
    for _ in range(rounds):
        for close in (True, False):
            for t in targets:
                pid = lab.pid(t)
                v0, n0 = context_switches(pid)
                r = bench.http_load(lab, t, 4, close)
                v1, n1 = context_switches(pid)
                per = r["requests"]
                print(f"{'conn' if close else 'keepalive'} {t}: {r['rps']:,.0f}/s, CPU {r['cpu_us_per_req']:.2f} µs, "
                      f"sleeps {(v1 - v0) / per:.3f} and preemptions {(n1 - n0) / per:.4f} per "
                      f"{'connection' if close else 'request'}, core {bench.PROXY_CPU} busy {r['proxy_core_busy']:.0f}%, "
                      f"core {bench.LOAD_CPU} busy {r['load_core_busy']:.0f}%", flush=True)


def probe_splices(lab, targets, streams, rounds, out_dir):
    events = "syscalls:sys_enter_splice,syscalls:sys_enter_epoll_wait"
    for _ in range(rounds):
        for t in targets:
            pid = lab.pid(t)
            counts = os.path.join(out_dir, f"perf-{t}.csv")
            watcher = subprocess.Popen(["perf", "stat", "-e", events, "-x,", "-o", counts, "-p", str(pid)],
                                       stderr=subprocess.DEVNULL)
            time.sleep(0.5)  # let perf attach before the load starts
            r = bench.bulk(lab, t, 4, streams)
            watcher.send_signal(2)
            watcher.wait(timeout=30)
            got = {}
            with open(counts) as f:
                for line in f:
                    fields = line.strip().split(",")
                    if len(fields) > 3 and fields[0].isdigit():
                        got[fields[2].split(":")[-1]] = int(fields[0])
            gb = r["bytes"] / 1e9
            splices = got.get("sys_enter_splice", 0)
            print(f"{t}: {r['gbit_s']:.2f} Gbit/s, CPU {r['cpu_ms_per_gb']:.0f} ms/GB, "
                  f"{splices / gb:,.0f} splices per GB ({r['bytes'] / max(splices, 1) / 1000:.0f} KB each), "
                  f"{got.get('sys_enter_epoll_wait', 0) / gb:,.0f} epoll_wait per GB", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tandem", required=True)
    ap.add_argument("probe", choices=["syscalls", "sleeps", "splices"])
    ap.add_argument("--targets", help="comma-separated: tandem,haproxy-splice,haproxy,nginx")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--streams", type=int, default=4)
    args = ap.parse_args()
    need = {"syscalls": ["strace", "wrk"], "sleeps": ["wrk"], "splices": ["perf", "iperf3"]}[args.probe]
    missing = [tool for tool in need + ["haproxy", "nginx", "iperf3", "nsd", "taskset"]
               if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode]
    if missing:
        sys.exit(f"missing: {' '.join(sorted(set(missing)))} (perf is in linux-perf, strace in strace)")
    default = {"syscalls": "tandem,nginx", "sleeps": "tandem,haproxy-splice,nginx",
               "splices": "tandem,haproxy-splice"}[args.probe]
    targets = [t for t in (args.targets or default).split(",") if t]
    unknown = [t for t in targets if t not in bench.PORTS or t in ("direct", "tandem-base")]
    if unknown:
        ap.error(f"unknown targets {unknown}")
    os.sched_setaffinity(0, {int(bench.LOAD_CPU)})
    lab = bench.Lab(args.tandem, 1, targets)
    try:
        lab.backends()
        lab.proxies()
        time.sleep(1)
        if args.probe == "syscalls":
            probe_syscalls(lab, targets, lab.dir)
        elif args.probe == "sleeps":
            probe_sleeps(lab, targets, args.rounds)
        else:
            probe_splices(lab, targets, args.streams, args.rounds, lab.dir)
    finally:
        lab.stop()


if __name__ == "__main__":
    main()
