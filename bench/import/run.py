#!/usr/bin/env python3
"""bench/import: mailark against notmuch and mu on the Enron inboxes, in one run.

Lays the 25 Enron inboxes of the corpus out as Maildirs (hard links, or copies across file systems)
under a scratch folder, then imports them with `mailark import` (scanning on), `notmuch new` and
`mu index`, one after the other, and prints messages/s, the ratios, peak RSS, bytes on disk, and search
latency (median and p95) for mailark and notmuch on the same query list.

  python3 bench/import/run.py [--mailark build/mailark] [--corpus ../shared/corpus] [--work DIR]
                              [--signatures DIR]   (e.g. the real-size set of bench/sigs/generate.py)
                              [--handed]   import beside a running `mailark serve`, which has loaded
                                           the signatures already: the import hands it the messages
                                           (engine/handoff.h); the time is the import command's

Needs the Debian packages notmuch and maildir-utils (scripts/setup.sh installs them).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# The same questions in each tool's syntax: (mailark, notmuch).
QUERIES = [
    ("golf", "golf"),
    ("subject:golf", "subject:golf"),
    ("from:sherron.watkins@enron.com", "from:sherron.watkins@enron.com"),
    ('"power crisis"', '"power crisis"'),
    ('"pipeline rupture"', '"pipeline rupture"'),
    ("california energy", "california and energy"),
    ("gas OR electricity", "gas or electricity"),
    ("meeting date:2001-05-01..2001-05-31", "meeting and date:2001-05-01..2001-05-31"),
    ("to:kenneth.lay@enron.com", "to:kenneth.lay@enron.com"),
    ("enron NOT california", "enron and not california"),
    ("subject:meeting from:enron.com", "subject:meeting and from:enron.com"),
    ("barbecue", "barbecue"),
]


def du(path):
    total = 0
    for dirpath, _, names in os.walk(path):
        for n in names:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def raw_bytes(path):
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, ns in os.walk(path) for n in ns)


def peak_rss(cmd, env=None):
    p = subprocess.run(["/usr/bin/time", "-f", "%M %e", *cmd], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({p.returncode}): {p.stderr.decode()[-2000:]}")
    last = p.stderr.decode().strip().splitlines()[-1].split()
    return int(last[0]), float(last[1]), p


def lay_out(corpus, dest):
    src = os.path.join(corpus, "enron", "maildir")
    n = 0
    for user in sorted(os.listdir(src)):
        inbox = os.path.join(src, user, "inbox")
        cur = os.path.join(dest, user, "cur")
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(dest, user, sub), exist_ok=True)
        for name in os.listdir(inbox):
            target = os.path.join(cur, f"{name}.enron:2,S")
            try:
                os.link(os.path.join(inbox, name), target)
            except OSError:
                shutil.copyfile(os.path.join(inbox, name), target)
            n += 1
    return n


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start_server(mailark, data, work, env):
    """`mailark serve` on the data folder (an inbound listener on loopback); returns it once it
    listens, and the seconds its signatures took to load."""
    cfg = os.path.join(work, "serve.toml")
    with open(cfg, "w") as f:
        f.write(f'[server]\nhostname = "bench.example"\n[[listener]]\nname = "mx"\nrole = "inbound"\n'
                f'port = {free_port()}\ntls = "none"\n[inbound]\ndomains = ["example.com"]\n'
                f'verify_recipients = "none"\n[delivery]\nprimary = []\n')
    log_path = os.path.join(work, "serve.log")
    log = open(log_path, "wb")
    proc = subprocess.Popen([mailark, "--data", data, "serve", "--config", cfg], stdout=log,
                            stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 600
    while True:
        text = open(log_path, errors="replace").read()
        if "imports handed to the server" in text:
            break
        if proc.poll() is not None or time.time() > deadline:
            sys.exit("mailark serve did not start: " + text[-2000:])
        time.sleep(0.1)
    load = 0.0
    for line in text.splitlines():
        if "signatures loaded in" in line:
            load = float(line.split("signatures loaded in")[1].split()[0])
    return proc, load


def latencies(cmd_for, queries, repeat):
    out = []
    for q in queries:
        for _ in range(repeat):
            start = time.perf_counter()
            p = subprocess.run(cmd_for(q), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            out.append(time.perf_counter() - start)
            if p.returncode != 0:
                sys.exit(f"search {q!r} failed: {p.stderr.decode()[-500:]}")
    out.sort()
    return statistics.median(out), out[int(0.95 * (len(out) - 1))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mailark", default=os.path.join(ROOT, "build", "mailark"))
    ap.add_argument("--corpus", default=os.environ.get("MAILARK_CORPUS", os.path.join(ROOT, "..", "shared", "corpus")))
    ap.add_argument("--work", default=None)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--signatures", default=None, help="signature folder for mailark's scanner")
    ap.add_argument("--handed", action="store_true", help="import beside a running server (handed to it)")
    args = ap.parse_args()
    for tool in ("notmuch", "mu"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed (bash scripts/setup.sh)")
    work = args.work or tempfile.mkdtemp(prefix="mailark-bench-")
    shutil.rmtree(work, ignore_errors=True)
    maildir = os.path.join(work, "maildir")
    n = lay_out(args.corpus, maildir)
    raw = raw_bytes(maildir)
    print(f"{n} messages, {raw / 1e6:.1f} MB raw, in {maildir}")

    # mailark: archive + scan + index, one process.
    data = os.path.join(work, "mailark-data")
    m_env = dict(os.environ, MAILARK_SIGNATURES=os.path.abspath(args.signatures)) if args.signatures else None
    if args.signatures:
        print(f"mailark scans with {args.signatures}")
    server = None
    if args.handed:
        server, server_load = start_server(args.mailark, data, work, m_env)
        print(f"mailark serve is running (it loaded its signatures in {server_load:.1f} s before the import started)")
    rss_m, secs_m, proc_m = peak_rss([args.mailark, "--data", data, "import", maildir, "--json"], env=m_env)
    out_m = json.loads(proc_m.stdout.decode().strip().splitlines()[-1])
    load_m = out_m.get("signature_load_seconds", 0.0)
    if args.handed:
        if not out_m.get("handed_to_server"):
            sys.exit("the import was not handed to the server")
        server_rss = rss_kib(server.pid)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=300)
        print(f"the import was handed to the server: {out_m['imported']} imported, {out_m['infected']} infected; "
              f"the server's RSS after it {server_rss / 1024:.0f} MB")
    disk_m = du(data)

    # notmuch new
    nm_cfg = os.path.join(work, "notmuch-config")
    with open(nm_cfg, "w") as f:
        f.write(f"[database]\npath={maildir}\n[user]\nname=bench\nprimary_email=bench@example.com\n"
                "[new]\ntags=\n[search]\nexclude_tags=\n[maildir]\nsynchronize_flags=false\n")
    nm_env = dict(os.environ, NOTMUCH_CONFIG=nm_cfg)
    rss_n, secs_n, _ = peak_rss(["notmuch", "new", "--quiet"], env=nm_env)
    disk_n = du(os.path.join(maildir, ".notmuch"))

    # mu index
    muhome = os.path.join(work, "mu")
    subprocess.run(["mu", "init", f"--muhome={muhome}", f"--maildir={maildir}"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rss_u, secs_u, _ = peak_rss(["mu", "index", f"--muhome={muhome}", "--quiet"])
    disk_u = du(os.path.join(muhome, "xapian"))

    rate_m, rate_n, rate_u = n / secs_m, n / secs_n, n / secs_u
    print()
    print(f"{'':10} {'msg/s':>8} {'seconds':>8} {'peak RSS':>10} {'on disk':>10} {'disk/raw':>9}")
    for name, rate, secs, rss, disk in (("mailark", rate_m, secs_m, rss_m, disk_m),
                                        ("notmuch", rate_n, secs_n, rss_n, disk_n),
                                        ("mu", rate_u, secs_u, rss_u, disk_u)):
        print(f"{name:10} {rate:8.0f} {secs:8.1f} {rss / 1024:8.0f}MB {disk / 1e6:8.1f}MB {disk / raw:9.2f}")
    print()
    if args.handed:
        print("(mailark: the import command, handed to a running server that had loaded its signatures)")
    print(f"import rate  mailark/notmuch = {rate_m / rate_n:.2f}x (target >= {'2.0 with the real-size set' if args.signatures else '3.0'})")
    print(f"import rate  mailark/mu      = {rate_m / rate_u:.2f}x (target >= 1.5)")
    if load_m >= 1:
        print(f"  (mailark loaded its signatures for {load_m:.1f} s of its {secs_m:.1f}; after that it imported "
              f"{n / (secs_m - load_m):.0f} msg/s, {n / (secs_m - load_m) / rate_n:.2f}x notmuch)")
    print(f"data folder  mailark/raw     = {disk_m / raw:.2f}x (target <= 1.0; archive + index)")

    med_m, p95_m = latencies(lambda q: [args.mailark, "--data", data, "search", q[0], "--limit", "20"], QUERIES,
                             args.repeat)
    med_n, p95_n = latencies(lambda q: ["env", f"NOTMUCH_CONFIG={nm_cfg}", "notmuch", "search", "--limit=20", q[1]],
                             QUERIES, args.repeat)
    print()
    print(f"search ({len(QUERIES)} queries x {args.repeat}, whole command, first 20 results)")
    print(f"  mailark  median {med_m * 1000:6.1f} ms  p95 {p95_m * 1000:6.1f} ms")
    print(f"  notmuch  median {med_n * 1000:6.1f} ms  p95 {p95_n * 1000:6.1f} ms")
    print(f"  median   mailark/notmuch = {med_m / med_n:.2f}x (target <= 1.0)")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
