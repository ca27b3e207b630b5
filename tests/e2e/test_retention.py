"""Retention (engine/retention.h) from the command line: a policy whose minimum can never be shortened,
a run that expires whole closed segments as if forty days had passed (faketime, Debian's libfaketime,
moves the clock of the one `mailark` process), legal holds that keep their mail, verify proving the
history across the gaps, a checkpoint signed before the expiry that still holds, and the signed
tombstones checked by tests/e2e/tlog.py without mailark. Every change is in the audit log."""
import hashlib
import json
import os
import shutil
import smtplib
import subprocess
import tempfile
import time
import unittest

import tlog
from harness import BIN, CORPUS, Server, free_port

SOURCE = os.environ.get("MAILARK_SOURCE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEMO = os.path.join(SOURCE, "demo", "mailbox.mbox")
FAKETIME = os.path.exists("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")


def faked_env(days):
    """The environment of a process whose wall clock runs `days` ahead (libfaketime, preloaded). The
    monotonic clock stays true: timed waits (condition variables, the event loop) are measured on it,
    and libfaketime does not move their deadlines. Under the sanitizer build ASan must accept a library
    loaded before it."""
    asan = os.environ.get("ASAN_OPTIONS", "")
    return dict(os.environ, LD_PRELOAD="/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
                FAKETIME=f"+{days}d", FAKETIME_DONT_FAKE_MONOTONIC="1",
                ASAN_OPTIONS=(asan + ":" if asan else "") + "verify_asan_link_order=0")


class RetentionTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mailark-retention-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.data = os.path.join(self.tmp, "data")
        # Segments of four messages: 1-4 and 5-8 closed, 9-10 live.
        self.cli("segments", "policy", "--max-records", "4")
        self.cli("import", DEMO, "--custodian", "Ana Ortega")
        self.vkey = self.cli("checkpoint", "key").stdout.decode().strip()

    def cli(self, *args, ok=True, days_later=0):
        cmd = [BIN, "--data", self.data, *args]
        p = subprocess.run(cmd, capture_output=True, timeout=120, env=faked_env(days_later) if days_later else None)
        if ok:
            self.assertEqual(p.returncode, 0, f"mailark {' '.join(args)}: {p.stderr.decode()}")
        return p

    def js(self, *args, days_later=0):
        return json.loads(self.cli(*args, "--json", days_later=days_later).stdout)

    def ids(self, query):
        return sorted(h["id"] for h in self.js("search", query, "--limit", "100")["results"])

    def test_the_minimum_retention_can_never_be_shortened(self):
        self.assertIn(b"kept forever", self.cli("retention", "show").stdout)
        self.cli("retention", "set", "--minimum", "1y", "--default", "7y", "--rule", "outbound:2y")
        shown = self.js("retention", "show")["policy"]
        self.assertEqual((shown["minimum_days"], shown["default_days"]), (365, 2555))
        p = self.cli("retention", "set", "--minimum", "300", ok=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"can never be shortened", p.stderr)
        p = self.cli("retention", "set", "--rule", "inbound:30", ok=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"shorter than the minimum", p.stderr)
        p = self.cli("retention", "set", "--default", "90", ok=False)
        self.assertEqual(p.returncode, 2)
        self.assertEqual(self.js("retention", "show")["policy"]["minimum_days"], 365, "nothing refused was written")
        # Forecasts only: --as-of cannot make a real run expire early.
        p = self.cli("retention", "run", "--as-of", "2040-01-01", ok=False)
        self.assertEqual(p.returncode, 2)
        changes = [e for e in self.js("audit", "list", "--limit", "100") if e["action"] == "retention.set"]
        self.assertEqual(len(changes), 1, "one change was made, and it is in the audit log")
        self.assertEqual(changes[0]["detail"]["after"]["minimum_days"], 365)
        self.assertEqual(changes[0]["detail"]["before"]["minimum_days"], 0)

    @unittest.skipUnless(FAKETIME, "faketime (Debian's faketime package, scripts/setup.sh) is not installed")
    def test_an_expiry_keeps_held_mail_and_verify_proves_the_history(self):
        held = [i for i in self.ids("berth") if i <= 8]
        self.assertTrue(held, "the demo mailbox talks of berths before its last two messages")
        self.cli("case", "create", "Harbour dispute", "--custodian", "Ana Ortega")
        self.cli("case", "search", "Harbour dispute", "berth", "--save")
        self.cli("case", "hold", "Harbour dispute", "--reason", "litigation notice")
        self.cli("retention", "set", "--default", "30")
        cp = os.path.join(self.tmp, "before.cp")
        self.cli("checkpoint", "--out", cp)

        self.assertEqual(self.js("retention", "run")["expired"], 0, "nothing is 30 days old yet")
        forecast = self.js("retention", "run", "--dry-run", "--as-of", "2099-01-01")
        self.assertEqual(forecast["due"], 8)
        self.assertEqual(forecast["held"], len(held))
        self.assertEqual(forecast["expirable"], 8 - len(held), "what the run below removes")
        self.assertEqual(self.ids(""), list(range(1, 11)), "a dry run removes nothing")

        ran = self.js("retention", "run", days_later=40)
        self.assertEqual(ran["expired"], 8 - len(held))
        self.assertEqual(ran["expirable"], ran["expired"])
        self.assertEqual(ran["held"], len(held))
        left = self.ids("")
        self.assertEqual(left, held + [9, 10])
        self.assertEqual([i for i in self.ids("berth") if i <= 8], held, "held mail is still found")
        gone = min(set(range(1, 9)) - set(held))
        p = self.cli("show", str(gone), ok=False)
        self.assertEqual(p.returncode, 3)
        self.assertIn(b"removed by retention", p.stderr)
        self.assertEqual(self.js("show", str(held[0]))["id"], held[0])

        # The history is proved across the gaps, against a checkpoint signed before the expiry.
        v = self.js("verify", "--checkpoint", cp)
        self.assertTrue(v["intact"], v)
        self.assertEqual((v["records_checked"], v["records_expired"]), (len(left), 8 - len(held)))
        self.assertTrue(v["checkpoints"][0]["holds"], v)
        lines = self.cli("retention", "tombstones", "--json").stdout.decode().splitlines()
        bodies = tlog.verify_tombstones(lines, self.vkey)
        expired = sorted(s for b in bodies for r in b["runs"] for s in range(r["first"], r["last"] + 1))
        self.assertEqual(expired, sorted(set(range(1, 9)) - set(held)))
        # One changed byte in a tombstone is caught by the independent verifier.
        bad = json.loads(lines[0])
        bad["body"] = bad["body"].replace('"by":"cli:', '"by":"cLi:', 1)
        with self.assertRaises(ValueError):
            tlog.verify_tombstones([json.dumps(bad)] + lines[1:], self.vkey)

        # Releasing the hold lets the held mail go at the next run; the live segment never expires.
        self.cli("case", "release", "Harbour dispute", "--reason", "settled")
        again = self.js("retention", "run", days_later=40)
        self.assertEqual(again["expired"], len(held))
        self.assertEqual(self.ids(""), [9, 10])
        v = self.js("verify", "--checkpoint", cp)
        self.assertTrue(v["intact"], v)
        self.assertEqual(v["records_expired"], 8)
        actions = [e["action"] for e in self.js("audit", "list", "--limit", "1000")]
        self.assertEqual(actions.count("retention.run"), 3, "every real run is in the audit log")
        self.assertIn("retention.set", actions)

    @unittest.skipUnless(FAKETIME, "faketime (Debian's faketime package, scripts/setup.sh) is not installed")
    def test_every_search_spans_a_segment_an_expiry_thinned(self):
        """Eight Enron inboxes imported one after another into segments of 8,000 messages, the first
        closed and partly expired under a hold: every search, a term every message left holds among
        them, still answers for the whole archive (an index with gaps where the expired records were
        failed such a search whole: Xapian 1.4's "Unexpected end of posting list"; indexer/index.h
        build_expired_document). Each import writes into the live shards the one before compacted:
        packed FULLER, the sixth import's first commit corrupted one ("Block 2 item 157: not in sorted
        order"; indexer/index.cc compact_index_into)."""
        maildir = os.path.join(CORPUS, "enron", "maildir")
        if not os.path.isdir(maildir):
            self.skipTest("the Enron corpus is not found (../shared/corpus, or set MAILARK_CORPUS)")
        self.data = os.path.join(self.tmp, "enron")
        self.cli("segments", "policy", "--max-records", "8000")
        for inbox in ("nemec-g", "dasovich-j", "lay-k", "campbell-l", "skilling-j", "salisbury-h", "buy-r", "may-l"):
            p = self.cli("import", "--no-scan", "--custodian", "Ana Ortega", os.path.join(maildir, inbox))
            self.assertEqual(p.stderr, b"", inbox)
        total = self.js("search", "", "--limit", "1")["total"]
        self.assertGreater(total, 9000)
        held = self.js("search", "enron", "--limit", "1")["total"]
        self.cli("case", "create", "Trading", "--custodian", "Ana Ortega")
        self.cli("case", "search", "Trading", "enron", "--save")
        self.cli("case", "hold", "Trading", "--reason", "subpoena")
        self.cli("retention", "set", "--default", "30")
        ran = self.js("retention", "run", days_later=40)
        self.assertGreater(ran["expired"], 3000)
        self.assertGreater(ran["held"], 3000)
        left = total - ran["expired"]
        segs = self.js("segments")["segments"]
        self.assertEqual(segs[0]["index_gaps"], 0, segs[0])
        self.assertEqual(segs[0]["index_documents"] + sum(s["index_documents"] for s in segs[1:]), left, segs)
        for q in ("", "direction:import", "verdict:unscanned", "NOT enron"):
            found = self.js("search", q, "--limit", "1")
            want = left - held if q == "NOT enron" else left
            self.assertEqual(found["total"], want, q)
        self.assertEqual(self.js("search", "enron", "--limit", "1")["total"], held)
        self.assertTrue(self.js("verify")["intact"])

    @unittest.skipUnless(FAKETIME, "faketime (Debian's faketime package, scripts/setup.sh) is not installed")
    def test_the_server_expires_while_it_serves(self):
        held = [i for i in self.ids("berth") if i <= 8]
        self.cli("case", "create", "Harbour dispute", "--custodian", "Ana Ortega")
        self.cli("case", "search", "Harbour dispute", "berth", "--save")
        self.cli("case", "hold", "Harbour dispute", "--reason", "litigation notice")
        self.cli("retention", "set", "--default", "30")
        port = free_port()
        config = f"""
[[listener]]
role = "inbound"
port = {port}
tls = "none"
[inbound]
domains = ["northwind.example"]
verify_recipients = "none"
[delivery]
primary = ["127.0.0.1:{free_port()}"]
[retention]
every = 1
"""
        srv = Server(config, data=self.data, env=faked_env(40))
        self.addCleanup(srv.cleanup)
        srv.start()
        # Mail keeps arriving while the pass runs (its clock, too, is forty days on: a new segment).
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
            s.sendmail("sender@partner.example", ["ana.ortega@northwind.example"],
                       "From: sender@partner.example\r\nTo: ana.ortega@northwind.example\r\n"
                       "Subject: still here\r\nMessage-ID: <late@partner.example>\r\n\r\nNew mail.\r\n")
        deadline = time.time() + 60
        while time.time() < deadline and "retention: expired" not in srv.server_log():
            time.sleep(0.2)
        self.assertIn(f"retention: expired {8 - len(held)} messages", srv.server_log())
        # Read beside the running server: what is left, and the new message (the server commits its
        # index every so often: polled, bounded).
        deadline = time.time() + 30
        while time.time() < deadline and self.ids("") != held + [9, 10, 11]:
            time.sleep(0.2)
        self.assertEqual(self.ids(""), held + [9, 10, 11])
        self.assertEqual(srv.stop(), 0)
        v = self.js("verify")
        self.assertTrue(v["intact"], v)
        self.assertEqual(v["records_expired"], 8 - len(held))
        runs = [e for e in self.js("audit", "list", "--limit", "1000") if e["action"] == "retention.run"]
        self.assertEqual([e["actor"] for e in runs], ["server"])
        self.assertEqual(runs[0]["detail"]["expired"], 8 - len(held))
        # The server's configuration is in the log once: a restart with the same file adds nothing.
        changes = [e for e in self.js("audit", "list", "--limit", "1000") if e["action"] == "config.change"]
        self.assertEqual([(e["actor"], e["detail"]["before"]) for e in changes], [("server", "")])
        with open(srv.config, "rb") as f:  # the hash of the bytes the server read
            self.assertEqual(changes[0]["detail"]["sha256"], hashlib.sha256(f.read()).hexdigest())
        again = Server(config, data=self.data)
        self.addCleanup(again.cleanup)
        again.start()
        self.assertEqual(again.stop(), 0)
        changes = [e for e in self.js("audit", "list", "--limit", "1000") if e["action"] == "config.change"]
        self.assertEqual(len(changes), 1)


if __name__ == "__main__":
    unittest.main()
