#!/usr/bin/env python3
"""bench/imap/beside_dovecot.py: what mailark's IMAP answers beside what Dovecot answers, message by
message, for the MIME edge cases of ../shared/corpus (a quality check, not a speed one).

Starts a private Dovecot and a mailark on a fresh data folder (one user each), APPENDs every file of
CORPUS/mime-edge under 200 KB to both (line ends made CRLF, an mbox "From " line dropped), then asks
both for the same FETCH items of each message (by the UIDs their APPENDUID gave) and compares the
answers after parsing them: strings, literals and NIL alike, RFC 2047 words decoded, runs of blanks
made one. It prints each message whose answers differ, both answers, and the counts; the APPENDs one
server refused (with its words) come first.

  python3 bench/imap/beside_dovecot.py [--mailark build/mailark] [--items "(ENVELOPE)"] [--show 20]

Differences are not all mailark's: Dovecot passes header words as sent and counts some sizes and
lines its own way (docs/BENCHMARKS.md, "IMAP answers beside Dovecot's"). Needs root and the Debian
package dovecot-imapd (scripts/setup.sh installs it).
"""
import argparse
import email.header
import glob
import imaplib
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
sys.path.insert(0, os.path.join(ROOT, "bench", "smtp"))
from common import free_port, stop_all, wait_port  # noqa: E402
from dovecot_instance import Dovecot  # noqa: E402

USER, PASSWORD = "u@example.com", "beside-dovecot"


def parse(b):
    """An IMAP answer as nested lists of str (None for NIL)."""
    i = 0

    def tok():
        nonlocal i
        while b[i:i + 1] == b" ":
            i += 1
        c = b[i:i + 1]
        if c == b"(":
            i += 1
            out = []
            while i < len(b):
                while b[i:i + 1] == b" ":
                    i += 1
                if b[i:i + 1] == b")":
                    i += 1
                    return out
                if i >= len(b):
                    break
                out.append(tok())
            return out
        if c == b'"':
            i += 1
            s = bytearray()
            while i < len(b) and b[i:i + 1] != b'"':
                if b[i:i + 1] == b"\\":
                    i += 1
                s += b[i:i + 1]
                i += 1
            i += 1
            return text(bytes(s))
        if c == b"{":
            j = b.index(b"}", i)
            n = int(b[i + 1:j])
            i = j + 1
            if b[i:i + 2] == b"\r\n":
                i += 2
            s = b[i:i + n]
            i += n
            return text(bytes(s))
        j = i
        while i < len(b) and b[i:i + 1] not in (b" ", b")", b"("):
            i += 1
        if i == j:
            i += 1
        atom = b[j:i]
        return None if atom == b"NIL" else atom.decode("ascii", "replace")

    out = []
    while i < len(b):
        out.append(tok())
    return out


def text(raw):
    t = raw.decode("utf-8", "replace")
    if "=?" in t:
        try:
            t = str(email.header.make_header(email.header.decode_header(t)))
        except Exception:  # a word neither decodes: compared as sent
            pass
    return " ".join(t.split())


def joined(fetch_data):
    """imaplib's FETCH data for one message as one byte string, without the sequence number and UID."""
    b = b"".join(p if isinstance(p, bytes) else b"".join(p) for p in fetch_data)
    b = re.sub(rb"^\d+ \(", b"(", b)
    # The UID item, first or last in the answer (never inside a section's bytes)
    b = re.sub(rb"^\(UID \d+ ", b"(", b)
    return re.sub(rb" UID \d+\)$", b")", b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mailark", default=os.path.join(ROOT, "build", "mailark"))
    ap.add_argument("--corpus", default=os.path.join(ROOT, "..", "shared", "corpus"))
    ap.add_argument("--items", default="(ENVELOPE)")
    ap.add_argument("--show", type=int, default=20, help="messages whose answers differ to print")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (a private Dovecot instance needs it)")
    files = sorted(f for f in glob.glob(os.path.join(args.corpus, "mime-edge", "**", "*"), recursive=True)
                   if os.path.isfile(f) and os.path.getsize(f) < 200_000)
    if not files:
        raise SystemExit(f"no MIME edge cases under {args.corpus}/mime-edge")
    work = tempfile.mkdtemp(prefix="mailark-beside-dovecot-")
    os.chmod(work, 0o755)
    procs, dovecot = [], None
    try:
        data = os.path.join(work, "data")
        subprocess.run([args.mailark, "--data", data, "user", "add", USER, "--password-stdin"],
                       input=PASSWORD.encode() + b"\n", check=True, capture_output=True)
        m_port = free_port()
        cfg = os.path.join(work, "mailark.toml")
        with open(cfg, "w") as f:
            f.write(f'[[listener]]\nrole = "inbound"\nport = {free_port()}\n'
                    f'[[listener]]\nrole = "imap"\nport = {m_port}\ntls = "none"\n')
        mailark = subprocess.Popen([args.mailark, "--data", data, "serve", "--config", cfg],
                                   stdout=open(os.path.join(work, "mailark.log"), "wb"), stderr=subprocess.STDOUT)
        procs.append(mailark)
        wait_port(m_port, mailark)
        d_port = free_port()
        dovecot = Dovecot(os.path.join(work, "dovecot"), d_port, {USER: PASSWORD})
        dovecot.start()

        servers = {"dovecot": imaplib.IMAP4("127.0.0.1", d_port), "mailark": imaplib.IMAP4("127.0.0.1", m_port)}
        for c in servers.values():
            c.login(USER, PASSWORD)
        pairs = []
        for path in files:
            raw = open(path, "rb").read()
            if raw.startswith(b"From "):
                raw = raw.split(b"\n", 1)[1] if b"\n" in raw else b""
            raw = re.sub(rb"\r?\n", b"\r\n", raw)
            if not raw.strip():
                continue
            uids, refused = {}, []
            for name, c in servers.items():
                status, answer = c.append("INBOX", None, None, raw)
                m = re.search(rb"APPENDUID \d+ (\d+)", answer[0] or b"")
                if status != "OK" or not m:
                    refused.append(f"{name}: {status} {(answer[0] or b'').decode('utf-8', 'replace')}")
                else:
                    uids[name] = m.group(1).decode()
            rel = os.path.relpath(path, os.path.join(args.corpus, "mime-edge"))
            if refused:
                print(f"APPEND refused, {rel}: " + "; ".join(refused))
            if len(uids) == 2:
                pairs.append((rel, uids))
        for c in servers.values():
            c.select("INBOX")
        bytewise = structural = 0
        for rel, uids in pairs:
            answers = {n: joined(c.uid("FETCH", uids[n], args.items)[1]) for n, c in servers.items()}
            if answers["dovecot"] == answers["mailark"]:
                continue
            bytewise += 1
            parsed = {n: parse(a) for n, a in answers.items()}
            if parsed["dovecot"] == parsed["mailark"]:
                continue
            structural += 1
            if structural <= args.show:
                print(f"== {rel}\n  dovecot: {parsed['dovecot']}\n  mailark: {parsed['mailark']}")
        print(f"\n{len(pairs)} messages in both, {args.items}: {bytewise} answers differ in bytes, "
              f"{structural} in what they say")
    finally:
        if dovecot:
            dovecot.stop()
        stop_all(procs)


if __name__ == "__main__":
    main()
