#!/usr/bin/env python3
"""bench/import/handed_settings.py: an import handed to a running server, with the server's default
[archive] settings and with batchier ones (group_commit_linger_ms = 50, index_commit_interval_ms =
10000), alternated twice; prints each import command's time. Needs the Maildir that
`bench/import/run.py --work /tmp/bench-hand` lays out and the real-size set of bench/sigs/generate.py.

  python3 bench/import/handed_settings.py [MAILARK] [MAILDIR] [SIGNATURES]
"""
import os, sys, time, subprocess, shutil, json, socket
M = sys.argv[1] if len(sys.argv) > 1 else "build-dev/mailark"
maildir = sys.argv[2] if len(sys.argv) > 2 else "/tmp/bench-hand/maildir"
SIGS = sys.argv[3] if len(sys.argv) > 3 else "/tmp/sigs-full"
def port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
def run(label, archive_extra):
    work = f"/tmp/hexp-{label}"; shutil.rmtree(work, ignore_errors=True); os.makedirs(work)
    cfg = f"{work}/s.toml"
    open(cfg, "w").write(f'[server]\nhostname = "b.example"\n[[listener]]\nname = "mx"\nrole = "inbound"\nport = {port()}\ntls = "none"\n[inbound]\ndomains = ["example.com"]\nverify_recipients = "none"\n[delivery]\nprimary = []\n[archive]\n{archive_extra}\n')
    env = dict(os.environ, MAILARK_SIGNATURES=SIGS)
    log = open(f"{work}/log", "wb")
    p = subprocess.Popen([os.path.abspath(M), "--data", f"{work}/data", "serve", "--config", cfg], stdout=log, stderr=subprocess.STDOUT, env=env)
    while "imports handed" not in open(f"{work}/log", errors="replace").read(): time.sleep(0.1)
    t = time.time()
    r = subprocess.run([M, "--data", f"{work}/data", "import", maildir, "--json"], capture_output=True, env=env)
    secs = time.time() - t
    out = json.loads(r.stdout)
    p.terminate(); p.wait()
    print(label, out["imported"], f"{secs:.1f} s", f"{out['imported']/secs:.0f} msg/s", flush=True)
for i in range(2):
    run("default", "")
    run("batchy", "group_commit_linger_ms = 50\nindex_commit_interval_ms = 10000")
