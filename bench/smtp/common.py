"""Pieces the benchmarks share (smtp/run.py: synthetic mail against Postfix; smtp/mail.py: real mail
with the real-size signature set; imap/bench.py; web/bench.py): ports, waiting for a listener,
percentiles, stopping what they started, the corpus's distinct Enron messages."""
import hashlib
import os
import signal
import socket
import subprocess
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, seconds=300):
    """Until something accepts on `port`; gives up when `proc` (if given) exits or `seconds` pass."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"process for port {port} exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port}")


def pct(values, p):
    """The p-th percentile of sorted `values` (nan when empty)."""
    return values[min(len(values) - 1, int(p * (len(values) - 1)))] if values else float("nan")


def stop_all(procs, timeout=60):
    """SIGTERM to each process still running, last started first; SIGKILL after `timeout` seconds."""
    for p in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()


def enron_files(corpus):
    """Every message file of the Enron maildirs of the corpus, each content once (mailark's import
    keeps one copy of identical bytes), sorted."""
    seen, out = set(), []
    root = os.path.join(corpus, "enron", "maildir")
    for dirpath, _dirs, files in os.walk(root):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).digest()
            if digest not in seen:
                seen.add(digest)
                out.append(path)
    return sorted(out)
