#!/usr/bin/env python3
"""bench/import/handed_ab.py: the handed import of bench/import/run.py's Maildir into a fresh server, two
builds alternated twice (OLD and NEW: each a `mailark` with its `mailark-server` beside it); prints
each import's time and the index's size after the server stopped. Needs the Maildir that
`bench/import/run.py --work /tmp/bench-hand` lays out and bench/sigs/generate.py's real-size set.
bench/import/handed_settings.py uses its handed_import for one build under two configurations.

  python3 bench/import/handed_ab.py OLD_MAILARK NEW_MAILARK [MAILDIR] [SIGNATURES]
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time


def port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def handed_import(label, mailark, maildir, sigs, archive_extra=""):
    """A fresh `mailark serve` (its [archive] section given `archive_extra`), the import of `maildir`
    handed to it and timed; prints the rate and the index's size once the server stopped."""
    work = f"/tmp/handed-{label}"
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    cfg = f"{work}/s.toml"
    with open(cfg, "w") as f:
        f.write(f'[server]\nhostname = "b.example"\n[[listener]]\nname = "mx"\nrole = "inbound"\nport = {port()}\n'
                f'tls = "none"\n[inbound]\ndomains = ["example.com"]\nverify_recipients = "none"\n[delivery]\n'
                f'primary = []\n[archive]\n{archive_extra}\n')
    env = dict(os.environ, MAILARK_SIGNATURES=sigs)
    log = open(f"{work}/log", "wb")
    p = subprocess.Popen([mailark, "--data", f"{work}/data", "serve", "--config", cfg], stdout=log,
                         stderr=subprocess.STDOUT, env=env)
    while "imports handed" not in open(f"{work}/log", errors="replace").read():
        if p.poll() is not None:
            sys.exit(open(f"{work}/log", errors="replace").read()[-2000:])
        time.sleep(0.1)
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
