#!/usr/bin/env python3
"""bench/import/door_catch_up.py: what an index catching up from the archive costs the SMTP door.

As bench/import/door_latency.py (one SMTP session, one message at a time, time from the end of DATA to
the reply), on a fresh server whose index folder is a small tmpfs: the index fills during an import
handed to the server and fails (the archive takes every message all the same); then the tmpfs is made
larger and each failed shard catches up from the archive, 500 records at a time (engine/ingest.h
index_catch_up_chunk). Phases: before (idle), import (the index fills and fails), broken (the index
full, mail archived only), catch-up (from the remount until every shard logged its recovery), after.

  python3 bench/import/door_catch_up.py [--mailark build-dev/mailark] [--maildir /tmp/bench-hand/maildir]
                                        [--index-mb 24] [--seconds 10]

Needs root (mount).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "bench", "smtp"))
from common import free_port, pct, stop_all  # noqa: E402
from door_latency import trickle  # noqa: E402
from mail import load_messages  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mailark", default=os.path.join(ROOT, "build-dev", "mailark"))
    ap.add_argument("--maildir", default="/tmp/bench-hand/maildir")
    ap.add_argument("--signatures", default="")
    ap.add_argument("--corpus", default=os.path.join(ROOT, "..", "shared", "corpus"))
    ap.add_argument("--index-mb", type=int, default=24, help="the index's tmpfs until the remount")
    ap.add_argument("--seconds", type=float, default=10, help="length of the before, broken and after phases")
    ap.add_argument("--pause", type=float, default=0.02)
    ap.add_argument("--work", default="/tmp/door-catch-up")
    a = ap.parse_args()

    index = f"{a.work}/data/index"
    subprocess.run(["umount", index], capture_output=True)
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(index)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={a.index_mb}m", "tmpfs", index], check=True)
    port = free_port()
    cfg = f"{a.work}/s.toml"
    with open(cfg, "w") as f:
        f.write(f'[server]\nhostname = "door.example"\n[[listener]]\nname = "mx"\nrole = "inbound"\n'
                f'port = {port}\ntls = "none"\n[inbound]\ndomains = ["example.com"]\n'
                f'verify_recipients = "none"\n[delivery]\nprimary = []\n')
    env = dict(os.environ)
    if a.signatures:
        env["MAILARK_SIGNATURES"] = a.signatures
    data = f"{a.work}/data"
    log_path = f"{a.work}/log"
    log = lambda: open(log_path, errors="replace").read()  # noqa: E731
    server = subprocess.Popen([a.mailark, "--data", data, "serve", "--config", cfg],
                              stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, env=env)
    stop = threading.Event()
    t = None
    try:
        while "imports handed" not in log():
            if server.poll() is not None:
                sys.exit(log()[-2000:])
            time.sleep(0.1)
        out = {"phase": "before", "replies": []}
        t = threading.Thread(target=trickle, args=(port, load_messages(a.corpus, 500), stop, out, a.pause))
        t.start()
        time.sleep(a.seconds)
        out["phase"] = "import"
        r = subprocess.run([a.mailark, "--data", data, "import", a.maildir, "--json"], capture_output=True, env=env)
        imported = json.loads(r.stdout)["imported"] if r.returncode == 0 else f"failed: {r.stderr[-300:]!r}"
        failures = log().count("the index catches up from the archive")
        out["phase"] = "broken"
        time.sleep(a.seconds)
        out["phase"] = "catch-up"
        t0 = time.time()
        subprocess.run(["mount", "-o", "remount,size=1g", index], check=True)
        while log().count(": recovered, caught up") < 2 and time.time() - t0 < 600:
            time.sleep(0.05)
        catch_up = time.time() - t0
        out["phase"] = "after"
        time.sleep(a.seconds)
    finally:
        stop.set()
        if t:
            t.join()
        stop_all([server])
        subprocess.run(["umount", index], capture_output=True)
    print(f"import: {imported} messages; index failures logged: {failures}; "
          f"catch-up of both shards {catch_up:.1f} s after the remount")
    print(f"{'phase':9} {'replies':>7} {'not 250':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for phase in ("before", "import", "broken", "catch-up", "after"):
        rs = [x for x in out["replies"] if x[0] == phase]
        lat = sorted(s * 1000 for _, code, s, _ in rs if code == 250)
        bad = sum(1 for _, code, _, _ in rs if code != 250)
        print(f"{phase:9} {len(rs):7} {bad:7} {pct(lat, .5):8.1f} {pct(lat, .95):8.1f} {pct(lat, .99):8.1f} "
              f"{(lat[-1] if lat else float('nan')):8.1f}")


if __name__ == "__main__":
    main()
