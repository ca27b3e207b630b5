#!/usr/bin/env python3
"""bench/index/server_writes.py: what a running server writes to disk, and the CPU it spends, for
each message it takes at a steady rate, at two index commit intervals, in one run.

For each interval a fresh `mailark serve` (inbound listener, no primary: the embedded default's
delivery) first takes --warm messages over 8 connections as fast as it goes, has them committed
(`mailark search`, which asks the server to) and rests 5 s, then takes --seconds of
messages at --rate over one SMTP connection (each sent once its predecessor's 250 came); then
`mailark search` beside it, which has the server commit what it has archived (DATA/index.sock), so
every interval's figures include the commit of its last messages. Measured over that window: bytes
the server's process wrote (/proc/PID/io write_bytes), sectors the disk under the data folder
wrote (/proc/diskstats: everything on that disk), and the server's CPU (utime + stime). Messages: the SMTP bench's mix (bench/smtp/mail.py).

  python3 bench/index/server_writes.py [--mailark build-dev/mailark] [--rate 2] [--seconds 60]
                                       [--warm 3000] [--intervals 1000,30000] [--data-from DIR]
                                       [--search-every S]

With --data-from, each interval's server starts on a copy of DIR (a data folder written by an import
or a stopped server) instead of taking --warm messages first: what a server writes on a live segment
of that size. With --search-every, a `mailark search` also runs every S seconds of the window (each
asks the server to commit what it has archived, as a portal's or IMAP's searches do).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bench", "smtp"))
from common import free_port, stop_all, wait_port  # noqa: E402
from mail import Conn, drive, load_messages  # noqa: E402  (the SMTP bench's mix of corpus messages, its client)


def disk_of(path):
    """The /proc/diskstats name of the block device holding path (a partition's parent disk too)."""
    dev = os.stat(path).st_dev
    major, minor = os.major(dev), os.minor(dev)
    with open("/proc/diskstats") as f:
        for line in f:
            p = line.split()
            if int(p[0]) == major and int(p[1]) == minor:
                return p[2]
    return None


def sectors_written(name):
    if not name:
        return 0
    with open("/proc/diskstats") as f:
        for line in f:
            p = line.split()
            if p[2] == name:
                return int(p[9])
    return 0


def proc_io(pid):
    with open(f"/proc/{pid}/io") as f:
        return {k: int(v) for k, v in (line.split(":") for line in f)}


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        p = f.read().rsplit(")", 1)[1].split()
    return (int(p[11]) + int(p[12])) / os.sysconf("SC_CLK_TCK")


def run(args, interval, msgs):
    work = tempfile.mkdtemp(prefix="mailark-bench-writes-", dir=args.work)
    port = free_port()
    cfg = os.path.join(work, "mailark.toml")
    with open(cfg, "w") as f:
        f.write(f'[[listener]]\nrole = "inbound"\nport = {port}\ntls = "none"\n'
                f'[inbound]\ndomains = ["example.com"]\nverify_recipients = "none"\n'
                f'[limits]\nsessions_per_ip = 64\n[archive]\nindex_commit_interval_ms = {interval}\n')
    data = os.path.join(work, "data")
    if args.data_from:
        shutil.copytree(args.data_from, data, symlinks=True)
    log = open(os.path.join(work, "mailark.log"), "wb")
    m = subprocess.Popen([args.mailark, "--data", data, "serve", "--config", cfg], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port, m)
        if not args.data_from:
            drive(port, msgs[:args.warm], 8)  # as fast as it goes
        # Its index committed (and the pair words chosen, the shards compacted once grown) before the
        # window, whatever the interval: the window measures the steady rate's own cost.
        subprocess.run([args.mailark, "--data", data, "search", "subject:zzzz-nothing"], check=True,
                       capture_output=True, timeout=300)
        time.sleep(5)
        c = Conn(port)
        c.reply()
        c.sock.sendall(b"EHLO bench.example\r\n")
        c.reply()

        def send(msg):
            c.sock.sendall(b"MAIL FROM:<load@bench.example>\r\nRCPT TO:<user@example.com>\r\nDATA\r\n")
            codes = [c.reply(), c.reply(), c.reply()]
            if codes[2] == 354:
                c.sock.sendall(msg)
                codes.append(c.reply())
            if codes[-1] != 250:
                raise SystemExit(f"mailark answered {codes}")
        it = iter(msgs[args.warm:])
        disk = disk_of(data)
        io0, cpu0, sec0 = proc_io(m.pid)["write_bytes"], proc_cpu(m.pid), sectors_written(disk)
        n = int(args.rate * args.seconds)
        start = time.perf_counter()
        searches = 0
        next_search = start + args.search_every if args.search_every else None
        for k in range(n):
            due = start + k / args.rate
            now = time.perf_counter()
            if next_search is not None and now >= next_search:
                # A reader beside the mail (as a portal's users searching): each asks for a commit.
                subprocess.run([args.mailark, "--data", data, "search", "subject:zzzz-nothing"], check=True,
                               capture_output=True, timeout=120)
                searches += 1
                next_search += args.search_every
                now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            send(next(it))
        c.sock.sendall(b"QUIT\r\n")
        c.reply()
        c.sock.close()
        t0 = time.perf_counter()
        subprocess.run([args.mailark, "--data", data, "search", "subject:zzzz-nothing"], check=True,
                       capture_output=True, timeout=120)
        asked = time.perf_counter() - t0
        io1, cpu1, sec1 = proc_io(m.pid)["write_bytes"], proc_cpu(m.pid), sectors_written(disk)
        return {"n": n, "written": (io1 - io0) / n, "disk": (sec1 - sec0) * 512 / n,
                "cpu_ms": (cpu1 - cpu0) * 1000 / n, "asked_ms": asked * 1000, "searches": searches}
    finally:
        stop_all([m], timeout=120)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mailark", default=os.path.join(ROOT, "build", "mailark"))
    ap.add_argument("--corpus", default=os.environ.get("MAILARK_CORPUS", os.path.join(ROOT, "..", "shared", "corpus")))
    ap.add_argument("--work", default=None, help="where the data folders go (default: the system's temporary folder)")
    ap.add_argument("--rate", type=float, default=2.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warm", type=int, default=3000)
    ap.add_argument("--intervals", default="1000,30000")
    ap.add_argument("--search-every", type=float, default=0,
                    help="also run `mailark search` (which asks for a commit) every this many seconds of the window")
    ap.add_argument("--data-from", default=None,
                    help="a data folder (of a stopped server or an import) copied for each interval instead "
                         "of the --warm messages: a live segment of that size")
    args = ap.parse_args()
    args.mailark = os.path.abspath(args.mailark)
    if args.data_from:
        args.data_from = os.path.abspath(args.data_from)
        args.warm = 0
    msgs = load_messages(args.corpus, args.warm + int(args.rate * args.seconds) + 10)
    first = f"a copy of {args.data_from}" if args.data_from else f"{args.warm} messages"
    beside = f", a search every {args.search_every:g} s" if args.search_every else ""
    print(f"{first} first, then {args.rate:g} msg/s for {args.seconds:g} s{beside}\n")
    print(f"{'commit interval':>16} {'written/msg':>12} {'disk/msg':>10} {'CPU/msg':>9} {'search asked':>13}")
    rows = {}
    for iv in [int(x) for x in args.intervals.split(",")]:
        r = run(args, iv, msgs)
        rows[iv] = r
        print(f"{iv:>14}ms {r['written'] / 1e6:>10.2f}MB {r['disk'] / 1e6:>8.2f}MB {r['cpu_ms']:>7.1f}ms "
              f"{r['asked_ms']:>11.0f}ms", flush=True)
    ivs = sorted(rows)
    if len(ivs) >= 2:
        a, b = rows[ivs[0]], rows[ivs[-1]]
        print(f"\n{ivs[-1]} ms against {ivs[0]} ms: written {b['written'] / max(a['written'], 1):.2f}x, "
              f"CPU {b['cpu_ms'] / max(a['cpu_ms'], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
