#!/usr/bin/env python3
"""bench/continuity: draining a continuity event's held mail to the primary, against Postfix flushing
the same messages from its deferred queue, in one run. Both deliver to Postfix's smtp-sink.

- mailark: a continuity event holds N inbound messages (smtp-source into the inbound listener while the
  event runs); `mailark continuity stop` starts the drain; timed until the state is normal again
  (every held message delivered). mailark's resident memory is sampled through the drain.
- Postfix: the same N messages into a private Postfix whose smtp transport is deferred
  (defer_transports = smtp), so they all wait in its deferred queue; then defer_transports is cleared,
  Postfix reloaded and `postqueue -f` run; timed until its queue is empty.

  python3 bench/continuity/drain.py [--mailark build/mailark] [--messages 100000] [--size 3400]
  python3 bench/continuity/drain.py --messages 1000000 --only-mailark    # a million held, mailark alone

Needs the Debian package postfix (smtp-source, smtp-sink, a private instance). Run as root.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
sys.path.insert(0, os.path.join(ROOT, "bench", "smtp"))
from common import free_port, stop_all, wait_port  # noqa: E402
from postfix_instance import Postfix  # noqa: E402


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))


def inject(port, messages, size, sessions=32):
    start = time.perf_counter()
    subprocess.run(["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(size), "-f",
                    "load@bench.example", "-t", "user@example.com", f"127.0.0.1:{port}"], check=True)
    return time.perf_counter() - start


def queue_files(queue_dir):
    n = 0
    for sub in ("incoming", "active", "deferred", "maildrop"):
        for _root, _dirs, files in os.walk(os.path.join(queue_dir, sub)):
            n += len(files)
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mailark", default=os.path.join(ROOT, "build", "mailark"))
    ap.add_argument("--messages", type=int, default=100000)
    ap.add_argument("--size", type=int, default=3400)
    ap.add_argument("--only-mailark", action="store_true", help="skip Postfix (a backlog too large for its queue)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (a private Postfix instance needs it)")
    work = tempfile.mkdtemp(prefix="mailark-bench-drain-")
    os.chmod(work, 0o755)
    procs = []
    postfix = None
    try:
        sink_port, postfix_port, mailark_port = free_port(), free_port(), free_port()
        procs.append(subprocess.Popen(["smtp-sink", "-u", "nobody", f"127.0.0.1:{sink_port}", "256"]))
        wait_port(sink_port)

        # ---- mailark ----
        data = os.path.join(work, "data")
        cfg = os.path.join(work, "mailark.toml")
        with open(cfg, "w") as f:
            f.write(f'[[listener]]\nrole = "inbound"\nport = {mailark_port}\ntls = "none"\n'
                    f'[inbound]\ndomains = ["example.com"]\nverify_recipients = "none"\n[limits]\nsessions_per_ip = 64\n'
                    f'[delivery]\nprimary = ["127.0.0.1:{sink_port}"]\n')
        cli = lambda *a: json.loads(subprocess.run([args.mailark, "--data", data, *a, "--json"], check=True,
                                                   capture_output=True).stdout)
        os.makedirs(data)
        cli("continuity", "start", "--reason", "benchmark")
        mlog = open(os.path.join(work, "mailark.log"), "wb")
        mailark = subprocess.Popen([args.mailark, "--data", data, "serve", "--config", cfg], stdout=mlog,
                                   stderr=subprocess.STDOUT)
        procs.append(mailark)
        wait_port(mailark_port)
        fill = inject(mailark_port, args.messages, args.size)
        print(f"mailark: {args.messages} messages held in {fill:.0f} s ({args.messages / fill:.0f} msg/s)")
        rss_before = rss_kb(mailark.pid)
        start = time.perf_counter()
        cli("continuity", "stop")
        samples = []
        while True:
            samples.append(rss_kb(mailark.pid))
            st = cli("continuity", "status", "--windows", "0", "--events", "1")
            if st["state"] == "normal":
                break
            time.sleep(0.5)
        m_secs = time.perf_counter() - start
        held = st["events"][0]["held_messages"]
        assert held == args.messages, f"held {held}"
        stop_all([mailark], timeout=60)
        procs.remove(mailark)

        if args.only_mailark:
            m_rate = args.messages / m_secs
            print(f"\nmailark drained {args.messages} in {m_secs:.1f} s: {m_rate:.0f} msg/s")
            print(f"mailark RSS: {rss_before / 1024:.0f} MB before the drain, {min(samples) / 1024:.0f}-"
                  f"{max(samples) / 1024:.0f} MB during it ({len(samples)} samples), {samples[-1] / 1024:.0f} MB at the end")
            return
        # ---- Postfix ----
        postfix = Postfix(os.path.join(work, "postfix"), postfix_port, f"""myhostname = postfix.bench.example
mydestination =
relay_domains = example.com
transport_maps = inline:{{example.com=smtp:[127.0.0.1]:{sink_port}}}
default_process_limit = 100
defer_transports = smtp
""")
        postfix.start()
        fill = inject(postfix_port, args.messages, args.size)
        while queue_files(postfix.queue) < args.messages or \
                queue_files(postfix.queue) != sum(len(f) for _r, _d, f in os.walk(os.path.join(postfix.queue, "deferred"))):
            time.sleep(1)
        print(f"postfix: {args.messages} messages deferred in {fill:.0f} s")
        subprocess.run(["postconf", "-c", postfix.conf, "-e", "defer_transports ="], check=True)
        start = time.perf_counter()
        subprocess.run(["postfix", "-c", postfix.conf, "reload"], check=True, capture_output=True)
        subprocess.run(["postqueue", "-c", postfix.conf, "-f"], check=True)
        while queue_files(postfix.queue) > 0:
            time.sleep(0.5)
        p_secs = time.perf_counter() - start

        m_rate, p_rate = args.messages / m_secs, args.messages / p_secs
        print(f"\n{'':10} {'msg/s':>8} {'seconds':>8}")
        print(f"{'mailark':10} {m_rate:8.0f} {m_secs:8.1f}")
        print(f"{'postfix':10} {p_rate:8.0f} {p_secs:8.1f}")
        print(f"\ndrain rate mailark/postfix = {m_rate / p_rate:.2f}x (target >= 2.0)")
        print(f"mailark RSS: {rss_before / 1024:.0f} MB before the drain, {min(samples) / 1024:.0f}-"
              f"{max(samples) / 1024:.0f} MB during it ({len(samples)} samples), {samples[-1] / 1024:.0f} MB at the end")
    finally:
        if postfix:
            postfix.stop()
        stop_all(procs, timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
