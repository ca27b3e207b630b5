"""Pieces the benchmarks share (smtp/run.py: synthetic mail against Postfix; smtp/mail.py: real mail
with the real-size signature set; imap/bench.py; web/bench.py): ports, waiting for a listener,
percentiles, stopping what they started, the corpus's distinct Enron messages and their copies
(web/bench.py, scale/run.py)."""
import math
import hashlib
import os
import re
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
    """The p-th percentile of sorted `values` by nearest rank: the smallest value at least a share p of
    them do not exceed (the largest of 2, 5 or 10 for p95; nan when empty). Until 2026-12-02 this took
    the value at floor(p * (n - 1)): the smallest of 2, the 4th of 5, the 9th of 10."""
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, math.ceil(p * len(values)) - 1))]


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


MSGID = re.compile(rb"^Message-ID:[ \t]*<([^>\r\n]*)>", re.I | re.M)
FROM_LINE = re.compile(rb"^(>*From )", re.M)


def link_originals(files, work):
    """WORK/files: one symlink a message (000000.eml, ...), the originals in import order."""
    listing = os.path.join(work, "files")
    if not os.path.isdir(listing):
        os.makedirs(listing)
        for i, path in enumerate(files):
            os.symlink(path, os.path.join(listing, f"{i:06d}.eml"))
    return listing


def write_copies(files, copies, out_dir, total=None):
    """Copy k (1..copies-1) of every message, Message-ID made unique, one mbox per copy (mboxrd), as
    the scale issue generated its 306,642 messages. With `total`, stops once the originals and the
    copies written make that many messages (the last mbox is then shorter)."""
    paths = []
    left = None if total is None else total - len(files)
    for k in range(1, copies):
        if left is not None and left <= 0:
            break
        path = os.path.join(out_dir, f"copy{k:02d}.mbox")
        with open(path, "wb") as out:
            for p in files:
                if left is not None:
                    if left <= 0:
                        break
                    left -= 1
                with open(p, "rb") as f:
                    raw = f.read().replace(b"\r\n", b"\n")
                if MSGID.search(raw):
                    raw = MSGID.sub(lambda m: b"Message-ID: <copy" + str(k).encode() + b"." + m.group(1) + b">", raw, count=1)
                else:
                    raw = f"Message-ID: <copy{k}.{hashlib.sha1(raw).hexdigest()}@bench>\n".encode() + raw
                body = FROM_LINE.sub(rb">\1", raw)
                out.write(b"From bench@example.com Sat Jan  1 00:00:00 2000\n" + body)
                if not body.endswith(b"\n"):
                    out.write(b"\n")
                out.write(b"\n")
        paths.append(path)
    return paths
