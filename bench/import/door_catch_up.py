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
from common import stop_all  # noqa: E402
from door_latency import print_phases, trickle  # noqa: E402
from handed_ab import start_server  # noqa: E402
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
    server, port, env, log_path = start_server(a.mailark, a.work, a.signatures)
    data = f"{a.work}/data"
    log = lambda: open(log_path, errors="replace").read()  # noqa: E731
    stop = threading.Event()
    t = None
    try:
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
    text = log()
    print(f"import: {imported} messages; index failures logged: {failures} "
          f"(of them Xapian meeting the full disk: {text.count('No space left on device')}; "
          f"refused before it: {text.count('is always left free')}); "
          f"catch-up of both shards {catch_up:.1f} s after the remount")
    if "ended by an uncaught error" in text:
        print("THE SERVER ENDED: " + text[text.index("ended by an uncaught error"):][:300])
    print_phases(out["replies"], ("before", "import", "broken", "catch-up", "after"))

if __name__ == "__main__":
    main()
