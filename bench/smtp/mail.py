#!/usr/bin/env python3
"""bench/smtp/mail.py: real mail through an SMTP gateway that scans, in one run:

  mailark          scans (libclamav in process), archives, indexes and queues, then relays;
  postfix+clamd    what an administrator would build instead: a private Postfix with clamav-milter and
                   clamd (Debian's packages), loaded with the same signature set;
  postfix          plain Postfix relaying, scanning nothing.

Each relays to Postfix's smtp-sink. The messages are read in place from ../shared/corpus: Enron
inbox messages (85%), SpamAssassin hard ham, which is HTML-heavy (10%), and MIME edge-case messages
that carry attachments (5%), each sent once per server over 32 sessions (commands pipelined, as MTAs
send them). While the load runs the driver records the time from the end of DATA to the reply.

  python3 bench/smtp/mail.py --signatures DIR [--messages 4000] [--sessions 32] [--reload-every SECONDS]

--reload-every: while the load runs, send mailark SIGHUP every SECONDS (a signature reload each time)
and report the reloads done, the replies other than 250 and the sessions dropped; peak RSS then holds
both engines. Use --only mailark for that run alone.

--data-from DIR: mailark starts on a copy of DIR (a data folder that already holds mail: its index has
chosen its pair words, as a server's has after its first 2,000 messages) rather than an empty one.

MAILARK_BENCH_EXTRA (environment): TOML appended to mailark's configuration, "\n" for newlines, e.g.
'[archive]\nindex_commit_interval_ms = 5000\n' (an A/B of one setting).

DIR: a signature set for both scanners, e.g. the real-size one from bench/sigs/generate.py (without it,
the project's two test signatures). Run as root (private Postfix instances); needs postfix,
clamav-daemon and clamav-milter (scripts/setup.sh installs them).
"""
import argparse
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from common import free_port, pct, stop_all, wait_port  # noqa: E402
from postfix_instance import Postfix  # noqa: E402


def pick_files(corpus, count, seed=7):
    """The files of load_messages, in its order."""
    rng = random.Random(seed)

    def files(path):
        out = []
        for d, _, names in os.walk(path):
            out += [os.path.join(d, n) for n in names]
        return sorted(out)

    enron = files(os.path.join(corpus, "enron", "maildir"))
    html = files(os.path.join(corpus, "spamassassin", "hard_ham"))
    attached = []
    for p in files(os.path.join(corpus, "mime-edge")):
        with open(p, "rb") as f:
            data = f.read()
        if b"attachment" in data.lower() and len(data) < 5_000_000:
            attached.append(p)
    rng.shuffle(enron)
    picks = [enron[i % len(enron)] for i in range(int(count * 0.85))]  # past 21,903: again, in order
    picks += [html[i % len(html)] for i in range(int(count * 0.10))]
    picks += [attached[i % len(attached)] for i in range(count - len(picks))]
    rng.shuffle(picks)
    return picks


def load_messages(corpus, count, seed=7):
    """count messages, CRLF line ends, each under 5 MB, in a fixed shuffled order."""
    msgs = []
    for p in pick_files(corpus, count, seed):
        with open(p, "rb") as f:
            data = f.read()
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if data.startswith(b"From ") and b"\n" in data:  # an mbox separator line
            data = data.split(b"\n", 1)[1]
        lines = [(b"." + l if l.startswith(b".") else l) for l in data.split(b"\n")]
        msgs.append(b"\r\n".join(lines).rstrip(b"\r\n") + b"\r\n.\r\n")
    return msgs


class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=300)
        self.buf = b""

    def reply(self):
        """One whole reply (multi-line ones included); returns its code."""
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return 0
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            if line[3:4] != b"-":
                return int(line[:3] or 0)


def session(port, work, results, lock):
    try:
        run_session(port, work, results, lock)
    except OSError as e:  # a dropped connection: counted, and its unsent messages go to other sessions
        with lock:
            results.append((-1, 0.0))
        print(f"session dropped: {e}", flush=True)


def run_session(port, work, results, lock):
    c = Conn(port)
    c.reply()
    c.sock.sendall(b"EHLO bench.example\r\n")
    c.reply()
    while True:
        try:
            msg = work.get_nowait()
        except queue.Empty:
            break
        c.sock.sendall(b"MAIL FROM:<load@bench.example>\r\nRCPT TO:<user@example.com>\r\nDATA\r\n")
        codes = [c.reply(), c.reply(), c.reply()]
        if codes[2] != 354:
            with lock:
                results.append((codes[2], 0.0))
            c.sock.sendall(b"RSET\r\n")
            c.reply()
            continue
        c.sock.sendall(msg)
        t0 = time.perf_counter()
        code = c.reply()
        if code == 0:
            raise ConnectionError("the server closed the connection after DATA")
        with lock:
            results.append((code, time.perf_counter() - t0))
    c.sock.sendall(b"QUIT\r\n")
    c.reply()
    c.sock.close()


def drive(port, msgs, sessions, during=None):
    work = queue.Queue()
    for m in msgs:
        work.put(m)
    results, lock = [], threading.Lock()
    threads = [threading.Thread(target=session, args=(port, work, results, lock)) for _ in range(sessions)]
    start = time.perf_counter()
    stop = threading.Event()
    side = threading.Thread(target=during, args=(stop,)) if during else None
    for t in threads:
        t.start()
    if side:
        side.start()
    for t in threads:
        t.join()
    secs = time.perf_counter() - start
    stop.set()
    if side:
        side.join()
    lat = sorted(l for code, l in results if code == 250)
    refused = sum(1 for code, _ in results if code not in (250, -1))
    dropped = sum(1 for code, _ in results if code == -1)
    if dropped:
        print(f"{dropped} sessions dropped", flush=True)
    return secs, lat, refused + dropped


def peak_rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
    except (FileNotFoundError, StopIteration):
        return float("nan")


def clamd_ready(sock_path, proc, seconds=600):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit("clamd exited")
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock_path)
            s.sendall(b"zPING\0")
            if s.recv(16).startswith(b"PONG"):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("clamd did not start")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mailark", default=os.path.join(ROOT, "build", "mailark"))
    ap.add_argument("--signatures", default=os.path.join(ROOT, "signatures"))
    ap.add_argument("--corpus", default=os.environ.get("MAILARK_CORPUS", os.path.join(ROOT, "..", "shared", "corpus")))
    ap.add_argument("--messages", type=int, default=4000)
    ap.add_argument("--sessions", type=int, default=32)
    ap.add_argument("--only", default="mailark,postfix+clamd,postfix")
    ap.add_argument("--data-from", default=None,
                    help="start mailark on a copy of this data folder (one that already holds mail) instead of an empty one")
    ap.add_argument("--reload-every", type=float, default=0, help="SIGHUP mailark every SECONDS during the load")
    ap.add_argument("--list-files", action="store_true",
                    help="print the files the load would send, one a line, and stop (bench/index/doc_cost takes them)")
    args = ap.parse_args()
    if args.list_files:
        print("\n".join(pick_files(args.corpus, args.messages)))
        return
    if os.geteuid() != 0:
        raise SystemExit("run as root (private Postfix instances need it)")
    sigs = os.path.abspath(args.signatures)
    msgs = load_messages(args.corpus, args.messages)
    total = sum(len(m) for m in msgs)
    work = tempfile.mkdtemp(prefix="mailark-bench-mail-")
    os.chmod(work, 0o755)
    procs, postfixes, rows = [], [], {}
    try:
        sink_port = free_port()
        procs.append(subprocess.Popen(["smtp-sink", "-u", "nobody", f"127.0.0.1:{sink_port}", "256"]))
        wait_port(sink_port)
        print(f"{len(msgs)} messages, {total / 1e6:.1f} MB, {args.sessions} sessions, signatures {sigs}\n", flush=True)
        relay = f"transport_maps = inline:{{example.com=smtp:[127.0.0.1]:{sink_port}}}\nrelay_domains = example.com\n" \
                "mydestination =\ndefault_process_limit = 100\nmessage_size_limit = 0\n"

        if "mailark" in args.only:
            port = free_port()
            cfg = os.path.join(work, "mailark.toml")
            with open(cfg, "w") as f:
                f.write(f'[[listener]]\nrole = "inbound"\nport = {port}\ntls = "none"\n'
                        f'[inbound]\ndomains = ["example.com"]\nverify_recipients = "none"\n'
                        f'[limits]\nsessions_per_ip = 64\n'
                        f'[delivery]\nprimary = ["127.0.0.1:{sink_port}"]\nconnections_per_destination = 8\n' + os.environ.get("MAILARK_BENCH_EXTRA", "").replace("\\n", "\n"))
            env = dict(os.environ, MAILARK_SIGNATURES=sigs)
            if args.data_from:
                shutil.copytree(args.data_from, os.path.join(work, "data"), symlinks=True)
            log = open(os.path.join(work, "mailark.log"), "wb")
            t0 = time.perf_counter()
            m = subprocess.Popen([args.mailark, "--data", os.path.join(work, "data"), "serve", "--config", cfg],
                                 stdout=log, stderr=subprocess.STDOUT, env=env)
            procs.append(m)
            wait_port(port, m)
            print(f"mailark ready in {time.perf_counter() - t0:.1f} s", flush=True)
            hups = []

            def reloads(stop):
                while not stop.wait(args.reload_every):
                    m.send_signal(signal.SIGHUP)
                    hups.append(time.perf_counter())

            secs, lat, refused = drive(port, msgs, args.sessions, reloads if args.reload_every else None)
            rows["mailark"] = (secs, lat, refused, peak_rss_mb(m.pid), "")
            if args.reload_every:
                deadline = time.time() + 300  # the last reload may still run: wait for it
                while True:
                    with open(os.path.join(work, "mailark.log"), errors="replace") as f:
                        text = f.read()
                    done = text.count("reload: virus signatures reloaded")
                    failed = text.count("reload: signatures:")
                    if done + failed >= text.count("reload: configuration") or time.time() > deadline:
                        break
                    time.sleep(1)
                rows["mailark"] = rows["mailark"][:3] + (peak_rss_mb(m.pid), "")
                print(f"SIGHUP sent {len(hups)} times during the load; signature reloads finished {done}, failed {failed} "
                      "(HUPs that arrive while a reload runs are coalesced into one more)", flush=True)

        if "postfix+clamd" in args.only:
            csock = os.path.join(work, "clamd.sock")
            with open(os.path.join(work, "clamd.conf"), "w") as f:
                f.write(f"LocalSocket {csock}\nForeground true\nDatabaseDirectory {sigs}\nTemporaryDirectory /dev/shm\n"
                        f"MaxThreads 12\nMaxQueue 200\nStreamMaxLength 64M\nMaxFileSize 100M\nMaxScanSize 256M\n"
                        f"ScanMail true\nScanArchive true\nAlertExceedsMax true\nAlertEncrypted true\n"
                        f"LogFile {work}/clamd.log\nUser root\n")
            t0 = time.perf_counter()
            clamd = subprocess.Popen(["clamd", "-c", os.path.join(work, "clamd.conf")], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
            procs.append(clamd)
            clamd_ready(csock, clamd)
            print(f"clamd ready in {time.perf_counter() - t0:.1f} s", flush=True)
            mport = free_port()
            with open(os.path.join(work, "milter.conf"), "w") as f:
                f.write(f"MilterSocket inet:{mport}@127.0.0.1\nClamdSocket unix:{csock}\nForeground true\n"
                        f"OnClean Accept\nOnInfected Reject\nOnFail Defer\nAddHeader Replace\nMaxFileSize 64M\n"
                        f"ReadTimeout 300\nLogFile {work}/milter.log\nPidFile {work}/milter.pid\n"
                        f"TemporaryDirectory /dev/shm\nUser root\n")
            milter = subprocess.Popen(["clamav-milter", "-c", os.path.join(work, "milter.conf")],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(milter)
            wait_port(mport, milter)
            pport = free_port()
            pf = Postfix(os.path.join(work, "postfix-clamd"), pport,
                         f"myhostname = scanning.bench.example\n{relay}smtpd_milters = inet:127.0.0.1:{mport}\n"
                         "milter_default_action = tempfail\nmilter_content_timeout = 300s\n")
            pf.start()
            postfixes.append(pf)
            secs, lat, refused = drive(pport, msgs, args.sessions)
            rows["postfix+clamd"] = (secs, lat, refused, peak_rss_mb(clamd.pid), " (clamd)")
            pf.stop()
            postfixes.remove(pf)

        if "postfix" in args.only.split(","):
            pport = free_port()
            pf = Postfix(os.path.join(work, "postfix-plain"), pport, f"myhostname = plain.bench.example\n{relay}")
            pf.start()
            postfixes.append(pf)
            secs, lat, refused = drive(pport, msgs, args.sessions)
            rows["postfix"] = (secs, lat, refused, float("nan"), "")

        print(f"\n{'':14} {'msg/s':>7} {'seconds':>8} {'p50 to reply':>13} {'p99 to reply':>13} {'not 250':>8} {'peak RSS':>10}")
        for name, (secs, lat, refused, rss, note) in rows.items():
            print(f"{name:14} {len(msgs) / secs:7.0f} {secs:8.1f} {pct(lat, .5) * 1000:11.1f}ms {pct(lat, .99) * 1000:11.1f}ms "
                  f"{refused:8d} {rss:7.0f} MB{note}")
        rate = {k: len(msgs) / v[0] for k, v in rows.items()}
        if "mailark" in rate and "postfix+clamd" in rate:
            print(f"\nrate mailark/(postfix+clamav-milter+clamd) = {rate['mailark'] / rate['postfix+clamd']:.2f}x (target >= 2.0)")
        if "mailark" in rate and "postfix" in rate:
            print(f"rate mailark/(plain postfix)               = {rate['mailark'] / rate['postfix']:.2f}x (target >= 1.0)")
    finally:
        for pf in postfixes:
            pf.stop()
        stop_all(procs)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
