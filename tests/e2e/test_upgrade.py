"""Data folders written by earlier releases open with this release: read as they are by read-only
commands, migrated in place by the first writing command, and what they had queued is delivered.

- tests/fixtures/format1-data.tar.gz: the first release (archive format 1, queue entries v1);
- tests/fixtures/format2-data.tar.gz: the edge-hardening release (archive format 2, queue entries v2,
  two messages deferred for an hour; no due index, no continuity tables).
- tests/fixtures/format3-data.tar.gz: the continuity release (archive format 3: no time segments, the
  index one segment at the top of DATA/index).
- tests/fixtures/format4-data.tar.gz: the release with time segments (archive format 4: three segments,
  their records in the main archive environment, each with its own index shards).
- tests/fixtures/format5-data.tar.gz: the release with segment stores (archive format 5: three segments,
  each in a store file of its own; no Merkle tree).
- tests/fixtures/format6-data.tar.gz: the release with the Merkle tree (archive format 6: three
  segments; no holdings table, imports deduplicated by content alone).
- tests/fixtures/format7-data.tar.gz: the release with custodians and cases (archive format 7: three
  segments of segment stores, imported with a custodian, one case; no retention tables).
- tests/fixtures/export-v1.zip (and export-v1.key, its archive's verifier key): an export written by
  that release (mailark-export-v1), which this release's verifiers still check; and export-v2.zip
  (and .key), one of the release before the load file (mailark-export-v2).
"""
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import unittest

import tlog
from harness import BIN, Server, free_port, scratch
from test_delivery import SINK, Sink

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
FIXTURE = os.path.join(FIXTURES, "format1-data.tar.gz")
CURRENT_FORMAT = 8  # what this release writes: every older folder is migrated to it


def config(port, primary):
    """An inbound listener on `port`, delivering to a primary on `primary` (an smtp-sink)."""
    return f"""
[[listener]]
role = "inbound"
port = {port}
tls = "none"
[inbound]
domains = ["northwind.example"]
verify_recipients = "none"
[delivery]
primary = ["127.0.0.1:{primary}"]
retry_schedule = [1]
[archive]
"""


def unpack(test, fixture):
    """Extracts tests/fixtures/FIXTURE into a fresh folder (removed after the test); returns its data folder."""
    tmp = tempfile.mkdtemp(prefix="mailark-upgrade-")
    test.addCleanup(shutil.rmtree, tmp, True)
    with tarfile.open(os.path.join(FIXTURES, fixture)) as t:
        t.extractall(tmp)
    return os.path.join(tmp, "data")


def import_partner_mail(test, srv, path, numbers, subject, body, tag):
    """Imports an mbox of messages from sender@partner.example, one per number (SUBJECT and BODY
    formatted with it, Message-ID <TAG-number@partner.example>)."""
    with open(path, "w") as f:
        for i in numbers:
            f.write(f"From sender@partner.example Mon Mar  2 10:00:00 2026\n"
                    f"From: sender@partner.example\nTo: ana.ortega@northwind.example\n"
                    f"Subject: {subject.format(i)}\nMessage-ID: <{tag}-{i}@partner.example>\n"
                    f"Date: Mon, 2 Mar 2026 10:{i:02d}:00 +0000\n\n{body.format(i)}\n\n")
    p = srv.run("import", path)
    test.assertEqual(p.returncode, 0, p.stderr)


def assert_date_ranges(test, srv, label):
    """Every date: range made from the messages' own dates (their day, month and year, open ranges from
    and to each day, a range over two months) finds exactly the messages whose dates fall in it: over
    shards written before date terms (matched by their date values) and after (by the terms)."""
    hits = srv.cli("search", "", "--limit", "1000")["results"]
    dates = {h["id"]: h["date"] for h in hits}
    days = sorted({d[:10] for d in dates.values()})
    ranges = set()
    for day in days:
        y, m, _ = day.split("-")
        ranges |= {day, f"{y}-{m}", y, f"{day}..", f"..{day}", f"{y}-{m}..{int(y) + 1}-01"}
    for r in sorted(ranges):
        lo, _, hi = r.partition("..") if ".." in r else (r, "", r)

        def inside(d):
            day = d[:10]
            return (not lo or day[:len(lo)] >= lo) and (not hi or day[:len(hi)] <= hi)
        want = sorted(i for i, d in dates.items() if inside(d))
        got = sorted(h["id"] for h in srv.cli("search", f"date:{r}", "--limit", "1000")["results"])
        test.assertEqual(got, want, f"{label}: date:{r}")


class UpgradeTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mailark-upgrade-")
        with tarfile.open(FIXTURE) as t:
            t.extractall(self.tmp)
        self.data = os.path.join(self.tmp, "data")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    @unittest.skipUnless(os.path.exists(SINK), "needs Postfix's smtp-sink")
    def test_format_one_data_folder_opens_migrates_and_delivers(self):
        primary = free_port()
        port = free_port()
        srv = Server(config(port, primary), data=self.data)
        # Read-only commands read it as it is.
        stats = srv.cli("stats")
        self.assertEqual(stats["archive_format"], 1, "a read-only open changes nothing")
        self.assertEqual(stats["messages"], 12)
        self.assertEqual(stats["infected"], 1)
        self.assertEqual(srv.search("rotterdam")["total"], 3)
        self.assertEqual(srv.search("verdict:infected")["total"], 1)
        self.assertTrue(srv.cli("verify")["intact"])
        queued = srv.cli("queue")["entries"]
        self.assertEqual([e["id"] for e in queued], [11, 12])
        self.assertEqual(queued[0]["recipients"][0]["state"], "pending")
        self.assertEqual(srv.cli("show", "11")["envelope"]["mail_from"], "old1@partner.example")

        # The first writing command migrates it in place; everything stays readable and intact.
        self.assertEqual(srv.cli("queue", "retry", "--all")["failed"], 0)
        self.assertEqual(srv.cli("stats")["archive_format"], CURRENT_FORMAT, "the first writing open migrates it")
        sink = Sink(primary, os.path.join(scratch("sink-"), "d"))
        try:
            srv.start()
            self.assertEqual(srv.cli("stats")["archive_format"], CURRENT_FORMAT)
            deadline = time.time() + 30
            while srv.cli("queue")["total"] and time.time() < deadline:
                time.sleep(0.2)
            self.assertEqual(srv.cli("queue")["total"], 0, srv.server_log()[-2000:])
            got = b"".join(sink.messages())
            for i in (1, 2):
                self.assertEqual(got.count(f"<old-release-{i}@partner.example>".encode()), 1)
            import smtplib
            s = smtplib.SMTP("127.0.0.1", port, timeout=10)
            s.sendmail("new@partner.example", ["ana.ortega@northwind.example"],
                       "Subject: after the upgrade\r\nMessage-ID: <new-release@partner.example>\r\n\r\nhello\r\n")
            s.quit()
            self.assertEqual(srv.wait_for("id:new-release@partner.example")["total"], 1)
            report = srv.cli("verify")
            self.assertTrue(report["intact"])
            self.assertEqual(report["records_checked"], 13, "the chain runs on across the upgrade")
        finally:
            self.assertEqual(srv.stop(), 0)
            sink.stop()

    @unittest.skipUnless(os.path.exists(SINK), "needs Postfix's smtp-sink")
    def test_format_two_data_folder_opens_migrates_and_delivers(self):
        data = unpack(self, "format2-data.tar.gz")
        tmp = os.path.dirname(data)
        primary, port = free_port(), free_port()
        srv = Server(config(port, primary), data=data)
        stats = srv.cli("stats")
        self.assertEqual(stats["archive_format"], 2, "a read-only open changes nothing")
        self.assertEqual(stats["messages"], 12)
        queued = srv.cli("queue")["entries"]
        self.assertEqual([e["id"] for e in queued], [11, 12])
        self.assertEqual(queued[0]["recipients"][0]["attempts"], 1, "deferred once by the old release")
        self.assertEqual(srv.cli("continuity", "status")["state"], "normal", "no continuity table reads as normal")
        # The first writing command migrates it (the due index built from the queue); deferred for an
        # hour by the old release, the entries are made due now, whatever the clock says.
        self.assertEqual(srv.cli("queue", "retry", "--all")["failed"], 0)
        self.assertEqual(srv.cli("stats")["archive_format"], CURRENT_FORMAT)
        sink = Sink(primary, os.path.join(tmp, "sink"))
        try:
            srv.start()
            deadline = time.time() + 30
            while srv.cli("queue")["total"] and time.time() < deadline:
                time.sleep(0.2)
            self.assertEqual(srv.cli("queue")["total"], 0, srv.server_log()[-2000:])
            got = b"".join(sink.messages())
            for i in (1, 2):
                self.assertEqual(got.count(f"<format2-release-{i}@partner.example>".encode()), 1)
            # A continuity event works on the migrated folder.
            self.assertTrue(srv.cli("continuity", "start")["changed"])
            self.assertTrue(srv.cli("continuity", "stop")["changed"])
            report = srv.cli("verify")
            self.assertTrue(report["intact"])
            self.assertEqual(report["records_checked"], 12)
        finally:
            self.assertEqual(srv.stop(), 0)
            sink.stop()


    def test_format_three_data_folder_opens_and_grows_a_second_segment(self):
        data = unpack(self, "format3-data.tar.gz")
        tmp = os.path.dirname(data)
        srv = Server(config(free_port(), free_port()), data=data)
        stats = srv.cli("stats")
        self.assertEqual(stats["archive_format"], 3, "a read-only open changes nothing")
        self.assertEqual(srv.search("rotterdam")["total"], 3)
        segs = srv.cli("segments")["segments"]
        self.assertEqual([(s["first"], s["last"], s["live"]) for s in segs], [(1, 10, True)])

        def import_mbox(name, n, start):
            import_partner_mail(self, srv, os.path.join(tmp, name), range(start, start + n),
                                "rotterdam shipment {}", "The rotterdam crane moved {}.", "after")

        # The first writing command migrates it; the old records, with no period, are the first segment
        # and the new ones begin the second, with shards of their own.
        import_mbox("one.mbox", 5, 1)
        self.assertEqual(srv.cli("stats")["archive_format"], CURRENT_FORMAT)
        segs = srv.cli("segments")["segments"]
        self.assertEqual([(s["first"], s["last"]) for s in segs], [(1, 10), (11, 15)])
        self.assertEqual([s["index_documents"] for s in segs], [10, 5])
        self.assertTrue(segs[0]["sealed"], "the closed first segment was sealed by the import's compaction")
        # Smaller segments from now on: the policy is the archive's.
        self.assertEqual(srv.cli("segments", "policy", "--max-records", "2")["max_records"], 2)
        import_mbox("two.mbox", 3, 6)
        segs = srv.cli("segments")["segments"]
        self.assertEqual([(s["first"], s["last"]) for s in segs], [(1, 10), (11, 15), (16, 17), (18, 18)])
        # Search, show and verify span every segment.
        res = srv.search("rotterdam")
        self.assertEqual(res["total"], 3 + 8)
        self.assertEqual(srv.search("subject:shipment")["total"], 8)
        self.assertEqual(srv.search('"rotterdam crane"')["total"], 8)
        self.assertEqual(srv.cli("show", "17")["envelope"]["mail_from"], "sender@partner.example")
        report = srv.cli("verify")
        self.assertTrue(report["intact"])
        self.assertEqual(report["records_checked"], 18, "the chain runs on across segments")
        # The index is derived: rebuilt, it is cut the same way and answers the same.
        p = srv.run("reindex")
        self.assertEqual(p.returncode, 0, p.stderr)
        segs = srv.cli("segments")["segments"]
        self.assertEqual([s["index_documents"] for s in segs], [10, 5, 2, 1])
        self.assertEqual(srv.search("rotterdam")["total"], 11)
        self.assertEqual(srv.search('"rotterdam crane"')["total"], 8)

    def test_format_four_segments_stay_in_place_and_the_next_one_gets_a_store(self):
        data = unpack(self, "format4-data.tar.gz")
        tmp = os.path.dirname(data)
        srv = Server(config(free_port(), free_port()), data=data)
        self.assertEqual(srv.cli("stats")["archive_format"], 4, "a read-only open changes nothing")
        # Its ten documents were read before the RFC 2047 repairs; `stats` says so until a reindex.
        self.assertEqual(srv.cli("stats")["indexed_before_repairs"], 10)
        self.assertIn(b"older reading    10 documents", srv.run("stats").stdout)
        # A search says so too: a word it wrote otherwise may be missing.
        self.assertEqual(srv.search("rotterdam")["older_reading"], 10)
        self.assertIn(b"10 documents of the index were read by an older release", srv.run("search", "rotterdam").stderr)
        segs = srv.cli("segments")["segments"]
        self.assertEqual([(s["first"], s["last"], s["store"]) for s in segs], [(1, 4, ""), (5, 8, ""), (9, 10, "")])
        self.assertEqual(srv.search("rotterdam")["total"], 3)
        self.assertTrue(srv.cli("verify")["intact"])
        assert_date_ranges(self, srv, "as written")

        import_partner_mail(self, srv, os.path.join(tmp, "more.mbox"), range(5), "rotterdam barge {}",
                            "The rotterdam barge left {}.", "four")
        assert_date_ranges(self, srv, "old shards and new")
        self.assertEqual(srv.cli("stats")["archive_format"], CURRENT_FORMAT, "the first writing open migrates it")
        # The live segment of the old release goes on in the main environment until it is full; the
        # next one is the first with a store file of its own. The fixture's live segment is of the
        # month it was written (2026-11): run in a later month, the import closes it at once and the
        # five new records start a segment of their own month (4 records a segment).
        segs = srv.cli("segments")["segments"]
        if time.strftime("%Y-%m", time.gmtime()) == "2026-11":
            self.assertEqual([(s["first"], s["last"]) for s in segs], [(1, 4), (5, 8), (9, 12), (13, 15)])
        else:
            self.assertEqual([(s["first"], s["last"]) for s in segs], [(1, 4), (5, 8), (9, 10), (11, 14), (15, 15)])
        self.assertEqual([bool(s["store"]) for s in segs], [False, False, False] + [True] * (len(segs) - 3))
        self.assertTrue(os.path.exists(segs[3]["store"]), segs[3]["store"])
        self.assertGreater(segs[3]["store_bytes"], 0)
        self.assertEqual(srv.search("rotterdam")["total"], 3 + 5)
        self.assertEqual(srv.search('"rotterdam barge"')["total"], 5)
        self.assertEqual(srv.cli("show", "11")["subject"], "rotterdam barge 0")
        self.assertEqual(srv.cli("show", "14")["subject"], "rotterdam barge 3")
        report = srv.cli("verify")
        self.assertTrue(report["intact"], report)
        self.assertEqual(report["records_checked"], 15, "the chain runs on from the main environment into the store")
        self.assertEqual(srv.cli("stats")["indexed_before_repairs"], 10, "the five new ones are read anew")
        # An export says what its search could not judge, and the audit log records it.
        p = srv.run("export", "rotterdam", "--out", os.path.join(tmp, "before-reindex.zip"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"10 documents of the index were read by an older release", p.stderr)
        self.assertIn(b"mailark reindex", p.stderr)
        out = srv.cli("export", "rotterdam", "--out", os.path.join(tmp, "before-reindex-2.zip"))
        self.assertEqual((out["older_reading"], out["unsearchable"]), (10, 0))
        p = srv.run("reindex")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(srv.search('"rotterdam barge"')["total"], 5)
        assert_date_ranges(self, srv, "reindexed")
        self.assertEqual(srv.cli("stats")["indexed_before_repairs"], 0)
        self.assertNotIn(b"older reading", srv.run("stats").stdout)
        p = srv.run("export", "rotterdam", "--out", os.path.join(tmp, "after-reindex.zip"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn(b"note:", p.stderr, "nothing left unjudged")
        self.assertNotIn(b"older release", srv.run("search", "rotterdam").stderr)

    def test_a_server_reads_older_segments_again_while_it_serves(self):
        """After an upgrade that changes the reading, a running server reads the sealed segments an
        older release indexed again in its daily pass (the first a second after it starts here): no
        reindex, no stop. The live segment's older documents are read once it is sealed: the pass
        closes it at the next message, and a later pass reads it."""
        data = unpack(self, "format4-data.tar.gz")
        web, port = free_port(), free_port()
        srv = Server(config(port, free_port()) + "seal_interval_ms = 200\n" +
                     f"[retention]\nevery = 1\n[web]\nlisten = \"127.0.0.1:{web}\"\n", data=data)
        self.addCleanup(srv.cleanup)
        self.assertEqual(srv.cli("stats")["indexed_before_repairs"], 10)
        srv.add_user("admin@northwind.example", "pw", role="admin")
        token = srv.run("user", "token", "admin@northwind.example", "add", "metrics").stdout.decode().strip()

        def gauge(name):
            """The portal's Prometheus gauge, as an administrator's scraper reads it."""
            text = subprocess.run(["curl", "-sf", "-H", "Authorization: Bearer " + token,
                                   f"http://127.0.0.1:{web}/metrics"], capture_output=True, check=True).stdout.decode()
            return [float(l.split()[1]) for l in text.splitlines() if l.startswith(name + " ")][0]
        before = {q: sorted(h["id"] for h in srv.cli("search", q, "--limit", "100")["results"])
                  for q in ("rotterdam", "from:northwind.example", "date:2026")}
        srv.start()
        deadline = time.time() + 60
        while "segments an older release indexed again" not in srv.server_log() and time.time() < deadline:
            time.sleep(0.2)
        self.assertIn("index: read 2 segments an older release indexed again (8 documents)", srv.server_log())
        self.assertEqual(srv.cli("stats")["indexed_before_repairs"], 2, "records 9 and 10, of the live segment")
        self.assertEqual(gauge("mailark_index_older_reading_documents"), 2)
        self.assertEqual(gauge("mailark_index_unsearchable_records"), 0)
        segs = srv.cli("segments")["segments"]
        self.assertEqual([s["older_reading"] for s in segs], [0, 0, 2], segs)
        for q, ids in before.items():
            self.assertEqual(sorted(h["id"] for h in srv.cli("search", q, "--limit", "100")["results"]), ids, q)
        assert_date_ranges(self, srv, "read again by the server")
        # A whole reindex beside it is refused, and says what the server does by itself.
        p = srv.run("reindex")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(b"reads again by itself", p.stderr)
        # The live segment's two: the pass asked for it to close at the next message, so the next
        # two begin a segment (one a shard), the closed one is sealed and a later pass reads it. (The
        # fixture's live segment is of an earlier month, which closes it at the next message too; that
        # the request alone does: Retention.TheLiveSegmentsOlderDocumentsAreReadOnceItIsClosed.)
        self.assertIn("index: the live segment holds 2 documents an older release indexed: it closes at the next message",
                      srv.server_log())
        import smtplib
        s = smtplib.SMTP("127.0.0.1", port, timeout=10)
        for i in (1, 2):
            s.sendmail("new@partner.example", ["ana.ortega@northwind.example"],
                       f"Subject: after the upgrade {i}\r\nMessage-ID: <live-cut-{i}@partner.example>\r\n\r\nhello\r\n")
        s.quit()
        deadline = time.time() + 60
        while "read 1 segments an older release indexed again (2 documents)" not in srv.server_log() and time.time() < deadline:
            time.sleep(0.2)
        self.assertIn("read 1 segments an older release indexed again (2 documents)", srv.server_log())
        segs = srv.cli("segments")["segments"]
        self.assertEqual([(s["first"], s["older_reading"]) for s in segs], [(1, 0), (5, 0), (9, 0), (11, 0)], segs)
        self.assertEqual(srv.cli("stats")["indexed_before_repairs"], 0)
        deadline = time.time() + 10  # the portal's readers are at most a second old
        while gauge("mailark_index_older_reading_documents") and time.time() < deadline:
            time.sleep(0.2)
        self.assertEqual(gauge("mailark_index_older_reading_documents"), 0)
        self.assertEqual(srv.server_log().count("it closes at the next message"), 1, "asked once")
        for q in ("rotterdam", "from:northwind.example"):
            self.assertEqual(sorted(h["id"] for h in srv.cli("search", q, "--limit", "100")["results"]), before[q], q)
        self.assertEqual(srv.wait_for("id:live-cut-2@partner.example")["total"], 1)
        self.assertEqual(srv.stop(), 0)
        self.assertTrue(srv.cli("verify")["intact"])

    def test_format_five_gets_its_merkle_tree_from_the_records_it_has(self):
        data = unpack(self, "format5-data.tar.gz")
        tmp = os.path.dirname(data)
        srv = Server(config(free_port(), free_port()), data=data)
        self.assertEqual(srv.cli("stats")["archive_format"], 5, "a read-only open changes nothing")
        p = srv.run("checkpoint")
        self.assertEqual(p.returncode, 6, p.stderr)
        self.assertIn(b"no Merkle tree yet", p.stderr)
        before = srv.cli("verify")
        self.assertTrue(before["intact"], before)
        self.assertFalse(before["tree_stored"])
        self.assertEqual(before["head_hash"], "b2e5f28597cef08711b68676ce843b2663c4cc1b7a88fb22a125927babe71c15")

        import_partner_mail(self, srv, os.path.join(tmp, "more.mbox"), range(4), "merkle {}", "Body {}.", "five")
        self.assertEqual(srv.cli("stats")["archive_format"], CURRENT_FORMAT, "the first writing open migrates it")
        after = srv.cli("verify")
        self.assertTrue(after["intact"], after)
        self.assertTrue(after["tree_stored"])
        self.assertEqual(after["records_checked"], 14)
        # The tree built in place over the old records is the one verify computed from them before,
        # and the old records are as they were (record 10's hash is the old head's).
        cons = json.loads(srv.run("checkpoint", "consistency", "10").stdout)
        self.assertEqual(cons["old_root"], before["tree_root"])
        self.assertEqual(cons["new_root"], after["tree_root"])
        proof = json.loads(srv.run("checkpoint", "prove", "10").stdout)
        record = tlog.base64.b64decode(proof["record"])
        self.assertEqual(record[-32:].hex(), before["head_hash"])
        self.assertTrue(tlog.verify_inclusion(9, 14, tlog.leaf_hash(record), [bytes.fromhex(h) for h in proof["proof"]],
                                              bytes.fromhex(after["tree_root"])))
        cp = os.path.join(tmp, "cp")
        self.assertEqual(srv.run("checkpoint", "--out", cp).returncode, 0)
        self.assertTrue(srv.cli("verify", "--checkpoint", cp)["checkpoints"][0]["holds"])

    def test_format_six_gets_its_holdings_and_custodians_copies(self):
        data = unpack(self, "format6-data.tar.gz")
        tmp = os.path.dirname(data)
        demo = os.path.join(os.path.dirname(FIXTURES), "..", "demo", "mailbox.mbox")
        srv = Server(config(free_port(), free_port()), data=data)
        self.assertEqual(srv.cli("stats")["archive_format"], 6, "a read-only open changes nothing")
        self.assertEqual([c["id"] for c in srv.cli("show", "1")["copies"]], [1], "no holdings yet: itself")
        before = srv.cli("verify")
        self.assertTrue(before["intact"], before)

        # The first writing open builds the holdings from the records: the old imports (no custodian)
        # hold the demo's messages, so importing them again without one adds nothing...
        again = srv.cli("import", demo)
        self.assertEqual((again["imported"], again["duplicates"]), (0, 10), again)
        self.assertEqual(srv.cli("stats")["archive_format"], CURRENT_FORMAT, "the first writing open migrates it")
        # ...and a custodian's copy of each is a record of its own, over the same stored bytes.
        stats = srv.cli("stats")
        bob = srv.cli("import", demo, "--custodian", "Bob Example")
        self.assertEqual((bob["imported"], bob["duplicates"]), (10, 0), bob)
        after = srv.cli("stats")
        self.assertEqual(after["messages"], 20)
        self.assertEqual(after["unique_messages"], stats["unique_messages"], "the bytes are stored once")
        self.assertEqual(srv.cli("import", demo, "--custodian", "bob example")["duplicates"], 10,
                         "a custodian holds a message once (names compare without case)")
        copies = srv.cli("show", "1")["copies"]
        self.assertEqual([(c["id"], c["custodians"]) for c in copies], [(1, []), (11, ["Bob Example"])])
        self.assertEqual(srv.cli("show", "11")["envelope"]["custodian"], "Bob Example")
        # An export names both holders of every message, each record proved, each message once (before the
        # index is rebuilt too); both verifiers agree.
        out = os.path.join(tmp, "both.zip")
        p = srv.run("export", "", "--out", out)
        self.assertEqual(p.returncode, 0, p.stderr)
        key = srv.run("checkpoint", "key").stdout.decode().strip()
        self.assertEqual(tlog.verify_export(out, key), 10)
        p = srv.run("verify-export", out, "--key", key)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        import zipfile
        with zipfile.ZipFile(out) as z:
            lines = [json.loads(x) for x in z.read("manifest.jsonl").decode().splitlines()[1:]]
        for m in lines:
            self.assertEqual(m["custodians"], ["Bob Example"], m["id"])
            self.assertEqual(len(m["copies"]), 1, m["id"])
            self.assertEqual({m["id"], m["copies"][0]["id"]}, {m["id"] % 10 or 10, (m["id"] % 10 or 10) + 10})

        # One hit per message archive-wide: a query of content alone leaves the later copies out (they
        # were marked as the import appended them); one naming a custodian collapses on the content key
        # (which the older release's documents lack, docs/FORMAT.md). A rebuilt index says the same.
        for rebuilt in (False, True):
            if rebuilt:
                p = srv.run("reindex")
                self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(srv.search("")["total"], 10, rebuilt)
            if rebuilt:  # collapsing needs the content key on the old records' documents too
                self.assertEqual(srv.search("quarterly")["total"], srv.search("quarterly direction:import")["total"])
            self.assertEqual(sorted(r["id"] for r in srv.search("is:copy")["results"]), list(range(11, 21)), rebuilt)
            self.assertEqual(sorted(r["id"] for r in srv.search('custodian:"bob example"')["results"]), list(range(11, 21)),
                             rebuilt)
        self.assertTrue(srv.cli("verify")["intact"])

    def check_old_export(self, name):
        zip_path = os.path.join(FIXTURES, name + ".zip")
        with open(os.path.join(FIXTURES, name + ".key")) as f:
            key = f.read().strip()
        self.assertEqual(tlog.verify_export(zip_path, key), 4)
        srv = Server(config(free_port(), free_port()))
        p = srv.run("verify-export", zip_path, "--key", key)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn(b"export intact: 4 messages", p.stdout)
        self.assertNotIn(b"load file", p.stdout, "an export from before the load file")
        # and a changed byte in it is still caught
        tmp = tempfile.mkdtemp(prefix="mailark-upgrade-")
        self.addCleanup(shutil.rmtree, tmp, True)
        with open(zip_path, "rb") as f:
            raw = bytearray(f.read())
        raw[len(raw) // 2] ^= 1
        bad = os.path.join(tmp, "bad.zip")
        with open(bad, "wb") as f:
            f.write(raw)
        self.assertEqual(srv.run("verify-export", bad, "--key", key).returncode, 1)

    def test_an_export_of_the_release_before_still_verifies(self):
        self.check_old_export("export-v1")

    def test_an_export_without_a_load_file_still_verifies(self):
        """mailark-export-v2 (the release before the load file): checked as it was written."""
        self.check_old_export("export-v2")


    @unittest.skipUnless(os.path.exists("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"),
                         "faketime (Debian's faketime package) is not installed")
    def test_format_four_segments_move_into_stores_and_expire(self):
        """Segments the format 4 release kept in the main environment: retention moves them into stores
        of their own and expires them (Archive::move_segments_to_stores), and `segments move` does the
        same ahead of it; the chain, the Merkle tree and every message read back all along."""
        from test_retention import faked_env
        for how in ("retention", "segments move"):
            with self.subTest(how=how):
                data = unpack(self, "format4-data.tar.gz")
                tmp = os.path.dirname(data)
                srv = Server(config(free_port(), free_port()), data=data)
                p = srv.run("segments", "move")
                self.assertNotEqual(p.returncode, 0, "the live segment is in the main environment too")
                self.assertIn(b"live segment", p.stderr)
                # Five more messages: the first segment with a store of its own follows the old ones.
                import_partner_mail(self, srv, os.path.join(tmp, "more.mbox"), range(5), "rotterdam barge {}",
                                    "The rotterdam barge left {}.", "four")
                segs = srv.cli("segments")["segments"]
                old = [s for s in segs if not s["store"]]
                self.assertGreaterEqual(len(old), 3, segs)
                self.assertFalse(old[-1]["live"])
                closed = [s for s in segs if not s["live"]]
                bodies = {i: srv.run("show", "--raw", str(i)).stdout for i in range(1, 16)}
                self.assertTrue(all(bodies.values()))
                cp = os.path.join(tmp, "cp")
                self.assertEqual(srv.run("checkpoint", "--out", cp).returncode, 0)
                if how == "segments move":
                    moved = srv.cli("segments", "move")["moved"]
                    self.assertEqual([m["first"] for m in moved], [s["first"] for s in reversed(old)])
                    self.assertEqual(sum(m["records"] for m in moved), sum(s["records"] for s in old))
                    after = srv.cli("segments")["segments"]
                    self.assertTrue(all(s["store"] and s["store_bytes"] > 0 for s in after), after)
                    self.assertTrue(all(s["store_sealed"] for s in after if not s["live"]), after)
                    for i in range(1, 16):
                        self.assertEqual(srv.run("show", "--raw", str(i)).stdout, bodies[i], i)
                    self.assertEqual(srv.search("rotterdam")["total"], 3 + 5)
                    v = srv.cli("verify", "--checkpoint", cp)
                    self.assertTrue(v["intact"], v)
                    self.assertEqual(v["records_checked"], 15)
                    self.assertEqual(srv.cli("segments", "move")["moved"], [], "nothing is left to move")
                p = srv.run("retention", "set", "--default", "30")
                self.assertEqual(p.returncode, 0, p.stderr)
                dry = subprocess.run([BIN, "--data", data, "retention", "run", "--dry-run", "--json"],
                                     capture_output=True, timeout=120, env=faked_env(400))
                self.assertEqual(dry.returncode, 0, dry.stderr)
                report = json.loads(dry.stdout)
                due = sum(s["records"] for s in closed)
                self.assertEqual(report["expirable"], due, report)
                self.assertEqual([s["moves_to_store"] for s in report["segments"]],
                                 [how == "retention" and not s["store"] for s in closed])
                self.assertTrue(all(not s["skipped"] for s in report["segments"]), report)
                # A year later, every closed segment is past 30 days: the old ones move, then all expire.
                p = subprocess.run([BIN, "--data", data, "retention", "run", "--json"], capture_output=True,
                                   timeout=120, env=faked_env(400))
                self.assertEqual(p.returncode, 0, p.stderr)
                report = json.loads(p.stdout)
                # The three sealed segments the older release indexed are read again first; the live one
                # (records 11-15) is of this reading.
                self.assertEqual((report["segments_read_again"], report["live_older_reading"]), (3, 0), report)
                self.assertEqual(report["expired"], due, report)
                self.assertEqual([m["first"] for m in report["segments_moved_to_stores"]],
                                 [s["first"] for s in reversed(old)] if how == "retention" else [])
                live = [s for s in segs if s["live"]][0]
                self.assertEqual(sorted(h["id"] for h in srv.cli("search", "")["results"]),
                                 list(range(live["first"], 16)))
                for i in range(live["first"], 16):
                    self.assertEqual(srv.run("show", "--raw", str(i)).stdout, bodies[i], i)
                v = srv.cli("verify", "--checkpoint", cp)
                self.assertTrue(v["intact"], v)
                self.assertEqual((v["records_checked"], v["records_expired"]), (16 - live["first"], due))
                self.assertTrue(v["checkpoints"][0]["holds"], v)

    def test_format_seven_migrates_and_its_segments_expire(self):
        data = unpack(self, "format7-data.tar.gz")
        tmp = os.path.dirname(data)
        srv = Server(config(free_port(), free_port()), data=data)
        self.assertEqual(srv.cli("stats")["archive_format"], 7, "a read-only open changes nothing")
        cp = os.path.join(tmp, "cp")
        self.assertEqual(srv.run("checkpoint", "--out", cp).returncode, 0)
        p = srv.run("retention", "set", "--default", "30")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(srv.cli("stats")["archive_format"], CURRENT_FORMAT, "the first writing open migrates it")
        # The folder was written in 2026-12; a year later its two closed segments are past 30 days.
        from test_retention import faked_env
        p = subprocess.run([BIN, "--data", data, "retention", "run", "--json"], capture_output=True, timeout=120,
                           env=faked_env(400))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["expired"], 8)
        self.assertEqual(sorted(h["id"] for h in srv.cli("search", "")["results"]), [9, 10])
        v = srv.cli("verify", "--checkpoint", cp)
        self.assertTrue(v["intact"], v)
        self.assertEqual((v["records_checked"], v["records_expired"]), (2, 8))
        self.assertTrue(v["checkpoints"][0]["holds"], v)


if __name__ == "__main__":
    unittest.main()
