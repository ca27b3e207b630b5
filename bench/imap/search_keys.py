#!/usr/bin/env python3
"""What one IMAP SEARCH of many text keys costs (docs/BENCHMARKS.md "IMAP SEARCH of many keys"): a
private `mailark serve` of the given build with 200-odd multipart SpamAssassin messages APPENDed to
one folder (small enough that every text key is a substring search of every message, no index), then
SEARCH with 1, 10, 64, 200 and 1,000 keys `NOT BODY word` (each true, so an AND evaluates them all).
A build with the bounds (api/imap/command.h kMaxTextSearchKeys) refuses past 64.

  python3 bench/imap/search_keys.py build-dev/mailark"""
import glob
import imaplib
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
binary = os.path.abspath(sys.argv[1])
os.environ["MAILARK_BIN"] = binary
import harness  # noqa: E402
from harness import Server, free_port  # noqa: E402
harness.BIN = binary
imap = free_port()
srv = Server(f"""
[server]
hostname = "mx.test.example"
[inbound]
domains = ["example.com"]
verify_recipients = "none"
[delivery]
smarthost = ["127.0.0.1:{free_port()}"]
primary = ["127.0.0.1:{free_port()}"]
[[listener]]
name = "mx"
role = "inbound"
port = {free_port()}
tls = "none"
[[listener]]
name = "imap"
role = "imap"
port = {imap}
tls = "none"
""", wait_port=imap)
srv.add_user("alice@example.com", "alice-pw-123", "user", "Alice")
srv.start()
corpus = os.environ.get("MAILARK_CORPUS", os.path.join(ROOT, "..", "shared", "corpus"))
files = sorted(glob.glob(os.path.join(corpus, "spamassassin", "*", "*")))[:3000]
random.seed(1); random.shuffle(files)
im = imaplib.IMAP4("127.0.0.1", imap); im.login("alice@example.com", "alice-pw-123")
n = 0
for f in files:
    raw = open(f, 'rb').read()
    if b'multipart' not in raw.lower() or len(raw) > 200000: continue
    typ, _ = im.append("INBOX", None, None, raw.replace(b'\r\n', b'\n').replace(b'\n', b'\r\n'))
    if typ == 'OK': n += 1
    if n >= 300: break
im.select("INBOX")
print("messages", n, flush=True)
for k in (1, 10, 64, 200, 1000):
    crit = " ".join("NOT BODY zzq%d" % i for i in range(k))
    t = time.perf_counter()
    try:
        typ, data = im.search(None, crit)
        said = f"{typ}, {len(data[0].split())} messages"
    except imaplib.IMAP4.error as e:
        said = str(e)
    print(f"{k:5d} text keys: {time.perf_counter() - t:7.2f} s  {said}", flush=True)
im.logout()
srv.cleanup()
