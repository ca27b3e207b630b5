#!/usr/bin/env python3
"""bench/import/handed_ab.py: the handed import of bench/import/run.py's Maildir into a fresh server, two
builds alternated twice (OLD and NEW: each a `mailark` with its `mailark-server` beside it); prints
each import's time and the index's size after the server stopped. Needs the Maildir that
`bench/import/run.py --work /tmp/bench-hand` lays out and bench/sigs/generate.py's real-size set.
bench/import/handed_settings.py uses its handed_import for one build under two configurations, and
door_latency.py and door_catch_up.py its start_server.

  python3 bench/import/handed_ab.py OLD_MAILARK NEW_MAILARK [MAILDIR] [SIGNATURES]
"""
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "smtp"))
from common import free_port  # noqa: E402


def start_server(mailark, work, sigs="", archive_extra=""):
    """A fresh `mailark serve` on WORK/data (WORK made by the caller), an inbound listener on a free
    port, no primary, its [archive] section given `archive_extra`, the signatures `sigs` (default: the
    environment's); returns (process, port, env, log path) once it takes handed imports."""
    p = free_port()
    cfg = f"{work}/s.toml"
    with open(cfg, "w") as f:
        f.write(f'[server]\nhostname = "b.example"\n[[listener]]\nname = "mx"\nrole = "inbound"\nport = {p}\n'
                f'tls = "none"\n[inbound]\ndomains = ["example.com"]\nverify_recipients = "none"\n[delivery]\n'
                f'primary = []\n[archive]\n{archive_extra}\n')
    env = dict(os.environ)
    if sigs:
        env["MAILARK_SIGNATURES"] = sigs
    log_path = f"{work}/log"
    proc = subprocess.Popen([mailark, "--data", f"{work}/data", "serve", "--config", cfg],
                            stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, env=env)
    while "imports handed" not in open(log_path, errors="replace").read():
        if proc.poll() is not None:
            sys.exit(open(log_path, errors="replace").read()[-2000:])
        time.sleep(0.1)
    return proc, p, env, log_path


def handed_import(label, mailark, maildir, sigs, archive_extra=""):
    """A fresh `mailark serve` (its [archive] section given `archive_extra`), the import of `maildir`
    handed to it and timed; prints the rate and the index's size once the server stopped."""
    work = f"/tmp/handed-{label}"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    p, _, env, _ = start_server(mailark, work, sigs, archive_extra)
    t = time.time()
    r = subprocess.run([mailark, "--data", f"{work}/data", "import", maildir, "--json"], capture_output=True, env=env)
    secs = time.time() - t
    out = json.loads(r.stdout)
    p.terminate()
    p.wait()
    index = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(f"{work}/data/index") for f in fs)
    print(label, out["imported"], f"{secs:.1f} s", f"{out['imported'] / secs:.0f} msg/s",
          f"index {index / 2**20:.1f} MiB", flush=True)


if __name__ == "__main__":
    old, new = sys.argv[1], sys.argv[2]
    maildir = sys.argv[3] if len(sys.argv) > 3 else "/tmp/bench-hand/maildir"
    sigs = sys.argv[4] if len(sys.argv) > 4 else "/tmp/sigs-full"
    for _ in range(2):
        handed_import("old", old, maildir, sigs)
        handed_import("new", new, maildir, sigs)
