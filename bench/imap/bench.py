#!/usr/bin/env python3
"""bench/imap: mailark's IMAP server against a private Dovecot on the same INBOX (the Enron maildirs of
../shared/corpus, about 21,903 messages, the same messages in both), in one run:

- mbsync full pull of the INBOX into an empty Maildir (wall time; the best of --rounds);
- UID SEARCH BODY <word> inside an open session (median and p95 over --searches runs of each word);
- IDLE: --idle connections each logged in, INBOX selected and in IDLE, held open together; the
  server's resident memory before and after (mailark: its one process; Dovecot: every process of the
  instance), per connection; and that every connection is still there after --hold seconds.

  python3 bench/imap/bench.py [--mailark build/mailark] [--idle 500] [--rounds 2]

Needs the Debian packages dovecot-imapd and isync (mbsync); run as root (Dovecot's private instance).
Both servers are asked over plaintext IMAP on loopback (no TLS on either side).
"""
import argparse
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
sys.path.insert(0, os.path.join(ROOT, "bench", "smtp"))
from common import enron_files, free_port, stop_all, wait_port  # noqa: E402
from dovecot_instance import Dovecot, nobody_ids  # noqa: E402

USER, PASSWORD = "bench@example.com", "bench-pw"
WORDS = ["enron", "pipeline", "california", "meeting", "tomorrow"]


def rss_kb(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))
        except (FileNotFoundError, StopIteration):
            pass
    return total


def dovecot_pids(dovecot):
    """The Dovecot master and all its children (imap, imap-login, auth, ...)."""
    pids = {dovecot.proc.pid}
    changed = True
    while changed:
        changed = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in pids:
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, IndexError, ValueError):
                continue
            if ppid in pids:
                pids.add(int(entry))
                changed = True
    return pids


class Client:
    """A minimal IMAP client on a plain socket: tagged commands, responses read to the tag."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.f = self.sock.makefile("rb")
        self.f.readline()
        self.n = 0

    def cmd(self, line):
        self.n += 1
        tag = f"t{self.n}".encode()
        self.sock.sendall(tag + b" " + line.encode() + b"\r\n")
        lines = []
        while True:
            l = self.f.readline()
            if not l:
                raise RuntimeError("connection closed")
            lines.append(l)
            if l.startswith(tag + b" "):
                if not l.startswith(tag + b" OK"):
                    raise RuntimeError(l.decode(errors="replace"))
                return lines
            # literals: read their bytes
            if l.rstrip().endswith(b"}") and b"{" in l:
                n = int(l.rstrip()[l.rstrip().rfind(b"{") + 1:-1])
                self.f.read(n)


def mbsync_pull(port, work, tag):
    target = os.path.join(work, f"pull-{tag}")
    shutil.rmtree(target, ignore_errors=True)
    os.makedirs(target)
    rc = os.path.join(work, f"mbsyncrc-{tag}")
    with open(rc, "w") as f:
        f.write(f"""IMAPAccount a
Host 127.0.0.1
Port {port}
User {USER}
Pass {PASSWORD}
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account a

MaildirStore local
Path {target}/
Inbox {target}/INBOX

Channel pull
Far :remote:
Near :local:
Patterns INBOX
Create Near
Sync Pull
SyncState *
""")
    start = time.perf_counter()
    p = subprocess.run(["mbsync", "-c", rc, "-a"], capture_output=True, timeout=3600)
    secs = time.perf_counter() - start
    if p.returncode != 0:
        raise RuntimeError(f"mbsync from {tag}: " + (p.stdout + p.stderr).decode(errors="replace")[-2000:])
    n = sum(len(files) for d in ("cur", "new") for _r, _d, files in os.walk(os.path.join(target, "INBOX", d)))
    shutil.rmtree(target, ignore_errors=True)
    return secs, n


def search_times(port, rounds):
    c = Client(port)
    c.cmd(f"LOGIN {USER} {PASSWORD}")
    c.cmd("SELECT INBOX")
    out = {}
    for w in WORDS:
        times, hits = [], 0
        for _ in range(rounds):
            start = time.perf_counter()
            lines = c.cmd(f"UID SEARCH BODY {w}")
            times.append((time.perf_counter() - start) * 1000)
            hits = sum(len(l.split()) - 2 for l in lines if l.startswith(b"* SEARCH"))
        times.sort()
        out[w] = (statistics.median(times), times[min(len(times) - 1, int(0.95 * len(times)))], hits)
    c.cmd("LOGOUT")
    return out


def idle_memory(port, pids_of, count, hold):
    before = rss_kb(pids_of())
    clients = []
    for _ in range(count):
        c = Client(port)
        c.cmd(f"LOGIN {USER} {PASSWORD}")
        c.cmd("SELECT INBOX")
        c.sock.sendall(b"idle IDLE\r\n")
        if not c.f.readline().startswith(b"+"):
            raise RuntimeError("IDLE refused")
        clients.append(c)
    time.sleep(2)
    after = rss_kb(pids_of())
    time.sleep(hold)
    alive = 0
    for c in clients:
        c.sock.sendall(b"DONE\r\n")
        l = c.f.readline()
        while l and not l.startswith(b"idle "):
            l = c.f.readline()
        alive += l.startswith(b"idle OK")
        c.sock.close()
    return before, after, alive


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mailark", default=os.path.join(ROOT, "build", "mailark"))
    ap.add_argument("--corpus", default=os.path.join(ROOT, "..", "shared", "corpus"))
    ap.add_argument("--idle", type=int, default=500)
    ap.add_argument("--hold", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--searches", type=int, default=20)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (a private Dovecot instance needs it)")
    work = tempfile.mkdtemp(prefix="mailark-bench-imap-")
    os.chmod(work, 0o755)
    procs, dovecot = [], None
    try:
        files = enron_files(args.corpus)
        print(f"{len(files)} distinct messages from {args.corpus}/enron/maildir")

        # ---- mailark: import for the user, serve IMAP ----
        data = os.path.join(work, "data")
        run = lambda *a, **kw: subprocess.run([args.mailark, "--data", data, *a], check=True, capture_output=True, **kw)
        run("user", "add", USER, "--password-stdin", input=PASSWORD.encode() + b"\n")
        listing = os.path.join(work, "files")
        os.makedirs(listing)
        # One folder of symlinks: `mailark import` takes folders, and this keeps exactly the set above.
        for i, path in enumerate(files):
            os.symlink(path, os.path.join(listing, f"{i:06d}.eml"))
        start = time.perf_counter()
        run("import", "--no-scan", "--owner", USER, listing)
        print(f"mailark import: {time.perf_counter() - start:.1f} s")
        m_port = free_port()
        cfg = os.path.join(work, "mailark.toml")
        with open(cfg, "w") as f:
            f.write(f'[[listener]]\nrole = "inbound"\nport = {free_port()}\n'
                    f'[[listener]]\nrole = "imap"\nport = {m_port}\ntls = "none"\n'
                    f'[imap]\nsessions = {args.idle + 100}\nsessions_per_ip = {args.idle + 100}\n')
        mlog = open(os.path.join(work, "mailark.log"), "wb")
        mailark = subprocess.Popen([args.mailark, "--data", data, "serve", "--config", cfg], stdout=mlog,
                                   stderr=subprocess.STDOUT)
        procs.append(mailark)
        wait_port(m_port, mailark)

        # ---- Dovecot: the same messages in a Maildir ----
        d_port = free_port()
        dovecot = Dovecot(os.path.join(work, "dovecot"), d_port, {USER: PASSWORD}, extra=f"""
service imap {{
  process_limit = {args.idle + 100}
}}
service imap-login {{
  process_limit = {args.idle + 100}
  client_limit = {args.idle + 100}
}}
default_client_limit = {2 * args.idle + 200}
mail_max_userip_connections = {args.idle + 100}
""")
        maildir = os.path.join(dovecot.mail, "example.com", "bench", "Maildir")
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(maildir, sub))
        for i, path in enumerate(files):
            shutil.copyfile(path, os.path.join(maildir, "cur", f"{1600000000 + i}.{i}.bench:2,S"))
        uid, gid = nobody_ids()
        for dirpath, dirs, names in os.walk(os.path.join(dovecot.mail)):
            for n in dirs + names:
                os.chown(os.path.join(dirpath, n), uid, gid)
        dovecot.start()
        # Both servers see the whole mailbox once before anything is timed (Dovecot builds its index).
        for port in (m_port, d_port):
            c = Client(port)
            c.cmd(f"LOGIN {USER} {PASSWORD}")
            c.cmd("SELECT INBOX")
            c.cmd("FETCH 1:* (FLAGS)")
            c.cmd("LOGOUT")

        # ---- mbsync full pull ----
        pulls = {"mailark": [], "dovecot": []}
        counts = {}
        for _ in range(args.rounds):
            for tag, port in (("mailark", m_port), ("dovecot", d_port)):
                secs, n = mbsync_pull(port, work, tag)
                pulls[tag].append(secs)
                counts[tag] = n
        m_pull, d_pull = min(pulls["mailark"]), min(pulls["dovecot"])
        print(f"\nmbsync full pull ({counts['mailark']} / {counts['dovecot']} messages):")
        print(f"  mailark {m_pull:.1f} s ({counts['mailark'] / m_pull:.0f} msg/s), dovecot {d_pull:.1f} s "
              f"({counts['dovecot'] / d_pull:.0f} msg/s); time mailark/dovecot = {m_pull / d_pull:.2f}x (target <= 1.0)")

        # ---- SEARCH BODY ----
        ms, ds = search_times(m_port, args.searches), search_times(d_port, args.searches)
        print("\nUID SEARCH BODY <word>, ms inside the session (median / p95), hits:")
        for w in WORDS:
            print(f"  {w:12} mailark {ms[w][0]:7.1f} / {ms[w][1]:7.1f} ({ms[w][2]:5})   "
                  f"dovecot {ds[w][0]:8.1f} / {ds[w][1]:8.1f} ({ds[w][2]:5})")

        # ---- IDLE ----
        if args.idle <= 0:
            return  # --idle 0: the pull and the searches only
        mb, ma, m_alive = idle_memory(m_port, lambda: [mailark.pid], args.idle, args.hold)
        db, da, d_alive = idle_memory(d_port, lambda: dovecot_pids(dovecot), args.idle, args.hold)
        m_per, d_per = (ma - mb) / args.idle, (da - db) / args.idle
        print(f"\n{args.idle} IDLE connections: mailark {m_alive} held, +{(ma - mb) / 1024:.1f} MB "
              f"({m_per:.0f} KB each); dovecot {d_alive} held, +{(da - db) / 1024:.1f} MB ({d_per:.0f} KB each); "
              f"memory per IDLE connection mailark/dovecot = {m_per / d_per:.2f}x (target <= 1.0)")
    finally:
        if dovecot:
            dovecot.stop()
        stop_all(procs, timeout=60)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
