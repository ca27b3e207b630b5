#!/usr/bin/env python3
"""bench/smtp: mailark against Postfix, in one run, each relaying to Postfix's smtp-sink.

Postfix's smtp-source drives 32 sessions of messages of corpus size (3,400 bytes, the Enron average)
at each server; a probe session measures the time from the end of DATA to the 250 reply while the load
runs. mailark parses, scans, compresses, archives, indexes and queues each message before its 250, then
delivers it to the sink (its primary server); Postfix only queues and relays.

  python3 bench/smtp/run.py [--mailark build/mailark] [--messages 5000] [--sessions 32]

Needs the Debian package postfix (smtp-source, smtp-sink, and a private Postfix instance that this
script sets up in a scratch folder and stops again). Run as root.
"""
import argparse
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from common import free_port, pct, stop_all, wait_port  # noqa: E402
from postfix_instance import Postfix  # noqa: E402  (the tests' private-instance helper)


def probe(port, stop, latencies):
    """One extra session: time from the end of DATA to the 250, while the load runs."""
    s = smtplib.SMTP("127.0.0.1", port, timeout=60)
    s.ehlo("probe.bench.example")
    body = "Subject: probe\r\n\r\n" + ("x" * 76 + "\r\n") * 42
    while not stop.is_set():
        s.mail("probe@bench.example")
        s.rcpt("probe@example.com")
        s.putcmd("data")
        s.getreply()
        s.send(body.encode() + b".\r\n")
        t0 = time.perf_counter()
        code, _ = s.getreply()
        if code == 250:
            latencies.append(time.perf_counter() - t0)
    s.quit()


def drive(port, messages, sessions, size):
    stop, latencies = threading.Event(), []
    t = threading.Thread(target=probe, args=(port, stop, latencies))
    t.start()
    start = time.perf_counter()
    subprocess.run(["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(size), "-f",
                    "load@bench.example", "-t", "user@example.com", f"127.0.0.1:{port}"], check=True)
    secs = time.perf_counter() - start
    stop.set()
    t.join()
    latencies.sort()
    return secs, latencies


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mailark", default=os.path.join(ROOT, "build", "mailark"))
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--sessions", type=int, default=32)
    ap.add_argument("--size", type=int, default=3400)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (a private Postfix instance needs it)")
    work = tempfile.mkdtemp(prefix="mailark-bench-smtp-")
    os.chmod(work, 0o755)
    procs = []
    try:
        sink_port, postfix_port, mailark_port = free_port(), free_port(), free_port()
        procs.append(subprocess.Popen(["smtp-sink", "-u", "nobody", f"127.0.0.1:{sink_port}", "256"]))
        wait_port(sink_port)
        cfg = os.path.join(work, "mailark.toml")
        with open(cfg, "w") as f:
            f.write(f'[[listener]]\nrole = "inbound"\nport = {mailark_port}\ntls = "none"\n'
                    f'[inbound]\ndomains = ["example.com"]\n[limits]\nsessions_per_ip = 64\n'
                    f'[delivery]\nprimary = ["127.0.0.1:{sink_port}"]\nconnections_per_destination = 8\n')
        mlog = open(os.path.join(work, "mailark.log"), "wb")
        mailark = subprocess.Popen([args.mailark, "--data", os.path.join(work, "data"), "serve", "--config", cfg],
                                   stdout=mlog, stderr=subprocess.STDOUT)
        procs.append(mailark)
        wait_port(mailark_port)
        postfix = Postfix(os.path.join(work, "postfix"), postfix_port, f"""myhostname = postfix.bench.example
mydestination =
relay_domains = example.com
transport_maps = inline:{{example.com=smtp:[127.0.0.1]:{sink_port}}}
default_process_limit = 100
""")
        postfix.start()

        print(f"{args.messages} messages of {args.size} bytes over {args.sessions} sessions, each server relaying "
              "to smtp-sink\n")
        m_secs, m_lat = drive(mailark_port, args.messages, args.sessions, args.size)
        with open(f"/proc/{mailark.pid}/status") as f:
            rss = next(int(l.split()[1]) for l in f if l.startswith("VmHWM"))
        p_secs, p_lat = drive(postfix_port, args.messages, args.sessions, args.size)
        m_rate, p_rate = args.messages / m_secs, args.messages / p_secs
        print(f"{'':10} {'msg/s':>8} {'seconds':>8} {'p50 to 250':>11} {'p99 to 250':>11}")
        print(f"{'mailark':10} {m_rate:8.0f} {m_secs:8.1f} {pct(m_lat, .5) * 1000:9.1f}ms {pct(m_lat, .99) * 1000:9.1f}ms")
        print(f"{'postfix':10} {p_rate:8.0f} {p_secs:8.1f} {pct(p_lat, .5) * 1000:9.1f}ms {pct(p_lat, .99) * 1000:9.1f}ms")
        print(f"\nrate mailark/postfix = {m_rate / p_rate:.2f}x (target >= 2.0)")
        print(f"mailark peak RSS {rss / 1024:.0f} MB")
    finally:
        if "postfix" in locals():
            postfix.stop()
        stop_all(procs, timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
