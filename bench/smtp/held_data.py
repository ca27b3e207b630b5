#!/usr/bin/env python3
"""What a mailark server holds in memory while clients send large messages.

N sessions (from N/per_ip loopback addresses, 127.0.0.2 and up, so the per-client limit is not what
stops them) each send the headers and SIZE_MIB of body of one message and then stop, inside DATA, as
a hostile or merely slow sender may; the server's resident memory is read then (VmRSS). Then every
session ends its message at once and the peak (VmHWM) is read once all have their reply, with the
count of each reply code. Memory is what this measures, never time.

  python3 bench/smtp/held_data.py --bin build-dev/mailark [--sessions 40] [--mib 20] [--runs 1]
  python3 bench/smtp/held_data.py --bin OLD --bin NEW ...      side by side, alternating
"""
import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def read_replies(sock, count):
    """The next `count` final reply lines (pipelined replies may come in one read)."""
    data = b""
    finals = []
    while len(finals) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        *lines, data = data.split(b"\r\n")
        finals += [line for line in lines if len(line) >= 4 and line[3:4] == b" "]
    return finals


@contextlib.contextmanager
def serving(binary, config, port, prepare=None):
    """`mailark serve` with `config` (TOML text) on a fresh data folder, once `port` answers; yields
    the process, then stops it and removes everything. prepare(data) runs before the start."""
    tmp = tempfile.mkdtemp(prefix="held-")
    data = os.path.join(tmp, "data")
    cfg = os.path.join(tmp, "mailark.toml")
    with open(cfg, "w") as f:
        f.write(config)
    if prepare:
        prepare(data)
    log = open(os.path.join(tmp, "serve.log"), "wb")
    proc = subprocess.Popen([binary, "--data", data, "serve", "--config", cfg], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("server did not start")
                time.sleep(0.1)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def all_at_once(fn, items):
    """fn(item) for every item, each on a thread of its own; returns when all have."""
    threads = [threading.Thread(target=fn, args=(item,)) for item in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def run(binary, sessions, mib, per_ip, extra):
    port = free_port()
    config = f"""
[server]
hostname = "mx.bench.example"
[[listener]]
name = "mx"
role = "inbound"
address = "0.0.0.0"
port = {port}
tls = "none"
[inbound]
domains = ["example.com"]
[limits]
message_bytes = {(mib + 2) << 20}
sessions = {sessions + 10}
sessions_per_ip = {per_ip}
{extra}
"""
    with serving(binary, config, port) as proc:
        idle = rss_kib(proc.pid, "VmRSS")
        line = b"All work and no play makes Jack a dull boy; " * 2 + b"\r\n"
        body = line * ((mib << 20) // len(line))
        socks = []
        for i in range(sessions):
            src = f"127.0.0.{2 + i // per_ip}"
            s = socket.create_connection(("127.0.0.1", port), timeout=120, source_address=(src, 0))
            read_replies(s, 1)
            s.sendall(b"EHLO bench.example\r\nMAIL FROM:<a@bench.example>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n")
            got = read_replies(s, 4)
            assert len(got) == 4 and got[-1].startswith(b"354"), got
            socks.append(s)

        def send(item):
            i, s = item
            s.sendall(b"From: a@bench.example\r\nTo: u@example.com\r\nSubject: held " + str(i).encode() +
                      b"\r\n\r\n" + body)

        all_at_once(send, list(enumerate(socks)))
        time.sleep(2)  # the server reads what the kernel buffered
        held = rss_kib(proc.pid, "VmRSS")
        replies = {}
        lock = threading.Lock()

        def finish(s):
            s.settimeout(660)  # a client waits 10 minutes for the reply to its final dot (RFC 5321 4.5.3.2.6)
            s.sendall(b".\r\n")
            got = read_replies(s, 1)
            r = got[0][:3].decode(errors="replace") if got else "closed"
            with lock:
                replies[r] = replies.get(r, 0) + 1
            s.sendall(b"QUIT\r\n")
            s.close()

        all_at_once(finish, socks)
        peak = rss_kib(proc.pid, "VmHWM")
        return idle, held, peak, replies


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", action="append", required=True)
    ap.add_argument("--sessions", type=int, default=40)
    ap.add_argument("--mib", type=int, default=20)
    ap.add_argument("--per-ip", type=int, default=20)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--extra", default="", help="more [limits] lines for the configuration")
    a = ap.parse_args()
    print(f"{a.sessions} sessions x {a.mib} MiB held inside DATA, then ended at once")
    for r in range(a.runs):
        for b in a.bin:
            idle, held, peak, replies = run(b, a.sessions, a.mib, a.per_ip, a.extra)
            print(f"run {r + 1} {b}: idle {idle / 1024:.0f} MB, held {held / 1024:.0f} MB, "
                  f"peak {peak / 1024:.0f} MB, replies {dict(sorted(replies.items()))}", flush=True)


if __name__ == "__main__":
    main()
