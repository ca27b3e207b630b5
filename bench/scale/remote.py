#!/usr/bin/env python3
"""bench/scale/remote.py: what searching sealed segments over Xapian's remote backend adds (issue 10).

Takes a data folder made by bench/scale/run.py (the million messages: four segments, three sealed),
runs the query set of run.py with every shard local, then with the shards of every sealed segment
served by its own `xapian-tcpsrv` on loopback (`mailark segments remote`, six processes for three
segments of two shards), then puts them back (`mailark segments local`). Reports per query the
search's own time (`search_ms`) both ways and the difference, and checks that every total and every
page is the same.

  python3 bench/scale/remote.py [--data /tmp/mailark-scale/data-1000000] [--rounds 5]
                                [--mailark build/mailark]

Loopback has no network latency: what this measures is the remote protocol's own cost (a round
trip per shard for the statistics and one for the results, documents' data serialised); a real
network adds its round-trip time per shard, in parallel across shards.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bench", "smtp"))
from common import pct  # noqa: E402

import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location("scale_run", os.path.join(HERE, "run.py"))
_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_run)
QUERIES = _run.QUERIES  # the query set of bench/scale/run.py


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cli(args, *argv):
    p = subprocess.run([args.mailark, "--data", args.data, *argv, "--json"], capture_output=True)
    if p.returncode != 0:
        sys.exit(f"mailark {' '.join(argv)} failed: {p.stderr.decode()[-1000:]}")
    return json.loads(p.stdout)


def measure(args):
    out = {}
    for _kind, q, _nq in QUERIES:
        times, answer = [], None
        for _ in range(args.rounds):
            j = cli(args, "search", "--limit", "20", q)
            times.append(j["search_ms"])
            answer = (j["total"], j.get("total_exact", True), [h["id"] for h in j["results"]])
        out[q] = {"median": statistics.median(times), "p95": pct(sorted(times), .95), "answer": answer}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/tmp/mailark-scale/data-1000000")
    ap.add_argument("--mailark", default=os.path.join(ROOT, "build", "mailark"))
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    tcpsrv = shutil.which("xapian-tcpsrv")
    if not tcpsrv:
        sys.exit("needs xapian-tcpsrv (Debian's xapian-tools)")
    segs = [s for s in cli(args, "segments")["segments"] if s["sealed"] and not s["remote"]]
    if not segs:
        sys.exit("no sealed local segment in " + args.data)
    local = measure(args)
    procs, moved = [], []
    try:
        for s in segs:
            sdir = os.path.join(args.data, "index") if s["first"] == 1 else os.path.join(
                args.data, "index", f"segment-{s['first']}")
            with open(os.path.join(sdir, "XAPIANDB")) as f:
                names = f.read().split()[1::2]
            endpoints = []
            for name in names:
                port = free_port()
                procs.append(subprocess.Popen([tcpsrv, "--interface", "127.0.0.1", "--port", str(port), "--quiet",
                                               os.path.join(sdir, name)],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                endpoints.append(f"127.0.0.1:{port}")
            for e in endpoints:
                for _ in range(200):
                    try:
                        socket.create_connection(("127.0.0.1", int(e.rsplit(":", 1)[1])), timeout=1).close()
                        break
                    except OSError:
                        time.sleep(0.05)
            cli(args, "segments", "remote", str(s["first"]), *endpoints)
            moved.append(s["first"])
        remote = measure(args)
    finally:
        for first in moved:
            cli(args, "segments", "local", str(first))
        for p in procs:
            p.kill()
            p.wait()
    n_remote = sum(1 for _ in procs)
    print(f"{len(moved)} sealed segments ({n_remote} shards) served by xapian-tcpsrv on loopback; "
          f"{args.rounds} rounds, search_ms inside the process")
    print(f"  {'query':40} {'local median/p95':>18} {'remote median/p95':>19} {'added':>8}")
    same = True
    for _kind, q, _nq in QUERIES:
        a, b = local[q], remote[q]
        # The first page is always exact; a total is compared when both are (with remote shards a
        # phrase that local shards check at once is checked while walking, its total estimated).
        (ta, ea, pa), (tb, eb, pb) = a["answer"], b["answer"]
        ok = pa == pb and (ta == tb or not (ea and eb))
        same = same and ok
        note = "" if ok else "  DIFFERENT ANSWER"
        if ok and ta != tb:
            note = f"  total {ta:,}{'' if ea else ' (est.)'} / {tb:,}{'' if eb else ' (est.)'}"
        print(f"  {q:40} {a['median']:8.1f} /{a['p95']:7.1f}  {b['median']:8.1f} /{b['p95']:7.1f}  "
              f"{b['median'] - a['median']:+7.1f}{note}")
    print("every first page the same, and every total that both give exactly: " + ("yes" if same else "NO"))
    print(json.dumps({"local": local, "remote": remote, "segments": moved}))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
