#!/usr/bin/env python3
"""What a mailark server holds in memory while a logged-in IMAP user APPENDs large messages.

N connections of one user each log in, start `APPEND INBOX {SIZE}` (a synchronising literal), send all
but the last 64 KiB of the message and stop; the server's resident memory is read then (VmRSS). Then
every connection sends the rest and the peak (VmHWM) is read once all have their tagged reply, with
the count of each. Memory is what this measures, never time.

  python3 bench/imap/held_append.py --bin build-dev/mailark [--connections 20] [--mib 20]
  python3 bench/imap/held_append.py --bin OLD --bin NEW ...      side by side, alternating
"""
import argparse
import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "smtp"))
from held_data import all_at_once, free_port, rss_kib as status_kib, serving  # noqa: E402


def read_until(sock, prefix):
    """Lines until one starts with `prefix`; returns that line."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b""
        data += chunk
        *lines, data = data.split(b"\r\n")
        for line in lines:
            if line.startswith(prefix):
                return line


def run(binary, connections, mib):
    port = free_port()
    config = f"""
[server]
hostname = "mx.bench.example"
[inbound]
domains = ["example.com"]
[[listener]]
name = "imap"
role = "imap"
address = "127.0.0.1"
port = {port}
tls = "none"
[limits]
message_bytes = {(mib + 2) << 20}
"""

    def add_user(data):
        p = subprocess.run([binary, "--data", data, "user", "add", "alice@example.com", "--password-stdin"],
                           input=b"alice-pw\n", capture_output=True)
        assert p.returncode == 0, p.stderr

    with serving(binary, config, port, prepare=add_user) as proc:
        line = b"All work and no play makes Jack a dull boy; " * 2 + b"\r\n"
        body = b"Subject: held\r\n\r\n" + line * ((mib << 20) // len(line))
        cut = len(body) - 65536
        socks = []
        for _ in range(connections):
            s = socket.create_connection(("127.0.0.1", port), timeout=120)
            read_until(s, b"* OK")
            s.sendall(b"a LOGIN alice@example.com alice-pw\r\n")
            assert read_until(s, b"a ").startswith(b"a OK"), "login"
            s.sendall(b"b APPEND INBOX {" + str(len(body)).encode() + b"}\r\n")
            socks.append((s, read_until(s, b"")))  # "+ ..." or a refusal
        idle = status_kib(proc.pid, "VmRSS")
        started = [s for s, first in socks if first.startswith(b"+")]
        all_at_once(lambda s: s.sendall(body[:cut]), started)
        time.sleep(2)
        held = status_kib(proc.pid, "VmRSS")
        replies = {}
        for s, first in socks:
            if not first.startswith(b"+"):
                key = first[:40].decode(errors="replace")
                replies[key] = replies.get(key, 0) + 1
        lock = threading.Lock()

        def finish(s):
            s.settimeout(600)
            s.sendall(body[cut:] + b"\r\n")
            r = read_until(s, b"b ")
            key = r[:4].decode(errors="replace") or "closed"
            with lock:
                replies[key] = replies.get(key, 0) + 1
            s.close()

        all_at_once(finish, started)
        peak = status_kib(proc.pid, "VmHWM")
        return idle, held, peak, replies


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", action="append", required=True)
    ap.add_argument("--connections", type=int, default=20)
    ap.add_argument("--mib", type=int, default=20)
    ap.add_argument("--runs", type=int, default=1)
    a = ap.parse_args()
    print(f"{a.connections} connections of one user x {a.mib} MiB APPEND literals held, then finished at once")
    for r in range(a.runs):
        for b in a.bin:
            idle, held, peak, replies = run(b, a.connections, a.mib)
            print(f"run {r + 1} {b}: idle {idle / 1024:.0f} MB, held {held / 1024:.0f} MB, "
                  f"peak {peak / 1024:.0f} MB, replies {dict(sorted(replies.items()))}", flush=True)


if __name__ == "__main__":
    main()
