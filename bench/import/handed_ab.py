#!/usr/bin/env python3
"""bench/import/handed_ab.py: the handed import of bench/import/run.py's Maildir into a fresh server, two
builds alternated twice (OLD and NEW: each a `mailark` with its `mailark-server` beside it); prints
each import's time and the index's size after the server stopped. Needs the Maildir that
`bench/import/run.py --work /tmp/bench-hand` lays out and bench/sigs/generate.py's real-size set.

  python3 bench/import/handed_ab.py OLD_MAILARK NEW_MAILARK [MAILDIR] [SIGNATURES]
"""
import os, sys, time, subprocess, shutil, json, socket
OLD, NEW = sys.argv[1], sys.argv[2]
maildir = sys.argv[3] if len(sys.argv) > 3 else "/tmp/bench-hand/maildir"
SIGS = sys.argv[4] if len(sys.argv) > 4 else "/tmp/sigs-full"
def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
def run(label, M):
    work = f"/tmp/handed-ab-{label}"; shutil.rmtree(work, ignore_errors=True); os.makedirs(work)
    cfg = f"{work}/s.toml"
    open(cfg, "w").write(f'[server]\nhostname = "b.example"\n[[listener]]\nname = "mx"\nrole = "inbound"\nport = {port()}\ntls = "none"\n[inbound]\ndomains = ["example.com"]\nverify_recipients = "none"\n[delivery]\nprimary = []\n')
    env = dict(os.environ, MAILARK_SIGNATURES=SIGS)
    log = open(f"{work}/log", "wb")
    p = subprocess.Popen([M, "--data", f"{work}/data", "serve", "--config", cfg], stdout=log, stderr=subprocess.STDOUT, env=env)
    while "imports handed" not in open(f"{work}/log", errors="replace").read(): time.sleep(0.1)
    t = time.time()
    r = subprocess.run([M, "--data", f"{work}/data", "import", maildir, "--json"], capture_output=True, env=env)
    secs = time.time() - t
    out = json.loads(r.stdout)
    p.terminate(); p.wait()
    idx = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(f"{work}/data/index") for f in fs)
    print(label, out["imported"], f"{secs:.1f} s", f"{out['imported']/secs:.0f} msg/s", f"index {idx/2**20:.1f} MiB", flush=True)
for i in range(2):
    run("old", OLD)
    run("new", NEW)
