#!/usr/bin/env python3
"""bench/import/door_latency.py: what an import handed to a running server costs the SMTP door.

A fresh `mailark serve` on loopback; one SMTP session sends real mail (bench/smtp/mail.py's mix, read
in place from ../shared/corpus) one message at a time, a short pause between them, and the time from
the end of DATA to the reply is recorded in three phases: before (the server idle but for this
session), during (while `mailark import MAILDIR` hands its messages to the server) and after (the
index catching up, compacting and committing what the import left). The same session, the same
messages in the same order, on the same server: the phases differ only by the import beside them.

  python3 bench/import/door_latency.py [--mailark build-dev/mailark] [--maildir /tmp/bench-hand/maildir]
                                       [--signatures DIR] [--seconds 20]

--maildir: the 21,903 Enron messages as bench/import/run.py lays them out (`--work /tmp/bench-hand`).
--signatures: e.g. bench/sigs/generate.py's real-size set (default: the project's test signatures).
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
from common import pct, stop_all  # noqa: E402
from handed_ab import start_server  # noqa: E402
from mail import Conn, load_messages  # noqa: E402


def trickle(port, msgs, stop, out, pause):
    """Sends msgs round and round on one session until `stop` is set; appends (phase, code, seconds)
    for each message, phase read from out['phase'] when its DATA ended."""
    c = Conn(port)
    c.reply()
    c.sock.sendall(b"EHLO door.example\r\n")
    c.reply()
    i = 0
    while not stop.is_set():
        c.sock.sendall(b"MAIL FROM:<door@bench.example>\r\nRCPT TO:<user@example.com>\r\nDATA\r\n")
        codes = [c.reply(), c.reply(), c.reply()]
        if codes[2] != 354:
            out["replies"].append((out["phase"], codes[2], 0.0, time.time()))
            c.sock.sendall(b"RSET\r\n")
            c.reply()
        else:
            phase = out["phase"]
            c.sock.sendall(msgs[i % len(msgs)])
            t0 = time.perf_counter()
            code = c.reply()
            out["replies"].append((phase, code, time.perf_counter() - t0, time.time()))
        i += 1
        time.sleep(pause)
    c.sock.sendall(b"QUIT\r\n")
    c.reply()


def print_phases(replies, phases):
    """The replies' count, those other than 250, and the percentiles of the 250s' times, by phase."""
    print(f"{'phase':9} {'replies':>7} {'not 250':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for phase in phases:
        rs = [x for x in replies if x[0] == phase]
        lat = sorted(s * 1000 for _, code, s, _ in rs if code == 250)
        bad = sum(1 for _, code, _, _ in rs if code != 250)
        print(f"{phase:9} {len(rs):7} {bad:7} {pct(lat, .5):8.1f} {pct(lat, .95):8.1f} {pct(lat, .99):8.1f} "
              f"{(lat[-1] if lat else float('nan')):8.1f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mailark", default=os.path.join(ROOT, "build-dev", "mailark"))
    ap.add_argument("--maildir", default="/tmp/bench-hand/maildir")
    ap.add_argument("--signatures", default="")
    ap.add_argument("--corpus", default=os.path.join(ROOT, "..", "shared", "corpus"))
    ap.add_argument("--seconds", type=float, default=20, help="length of the before and after phases")
    ap.add_argument("--pause", type=float, default=0.02, help="seconds between two messages of the session")
    ap.add_argument("--work", default="/tmp/door-latency")
    a = ap.parse_args()

    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    server, port, env, log_path = start_server(a.mailark, a.work, a.signatures)
    data = f"{a.work}/data"
    try:
        msgs = load_messages(a.corpus, 500)
        out = {"phase": "before", "replies": []}
        stop = threading.Event()
        t = threading.Thread(target=trickle, args=(port, msgs, stop, out, a.pause))
        t.start()
        time.sleep(a.seconds)
        out["phase"] = "during"
        t0 = time.time()
        r = subprocess.run([a.mailark, "--data", data, "import", a.maildir, "--json"], capture_output=True, env=env)
        secs = time.time() - t0
        out["phase"] = "after"
        time.sleep(a.seconds)
        stop.set()
        t.join()
        imported = json.loads(r.stdout)["imported"] if r.returncode == 0 else f"failed: {r.stderr[-300:]!r}"
    finally:
        stop_all([server])
    print(f"import: {imported} messages in {secs:.1f} s beside the session")
    print_phases(out["replies"], ("before", "during", "after"))
    compactions = sum(1 for line in open(log_path, errors="replace") if "compacted:" in line)
    print(f"index compactions the server logged: {compactions}")
    slowest = sorted(out["replies"], key=lambda x: -x[2])[:5]
    print("slowest replies (seconds after the import started, ms): " +
          ", ".join(f"{w - t0:.1f} s {s * 1000:.0f}" for _, _, s, w in slowest))


if __name__ == "__main__":
    main()
