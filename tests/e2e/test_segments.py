"""Time segments under a running server: mail arriving by SMTP cuts segments as the archive's policy
says, search, show and verify span them while the server runs, the server seals the closed ones in
place as it runs (archive.seal_interval_ms), and `mailark segments seal` does it with the server
stopped (engine/archive.h "Time segments", docs/FORMAT.md)."""
import os
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
import unittest

from harness import Server, free_port
from test_upgrade import config

TCPSRV = shutil.which("xapian-tcpsrv")


class SegmentsTest(unittest.TestCase):
    def test_smtp_mail_cuts_segments_that_search_spans(self):
        tmp = tempfile.mkdtemp(prefix="mailark-segments-")
        self.addCleanup(shutil.rmtree, tmp, True)
        port = free_port()
        # An inbound listener whose primary is a port nobody listens on: mail stays queued.
        conf = config(port, free_port()).replace("[archive]\n", "[archive]\nseal_interval_ms = 200\n")
        srv = Server(conf, data=os.path.join(tmp, "data"))
        self.assertEqual(srv.cli("segments", "policy", "--max-records", "3")["max_records"], 3)
        srv.start()
        try:
            for i in range(8):
                # One message per session, so that every append is its own batch and the cuts fall
                # between batches as well as inside them.
                s = smtplib.SMTP("127.0.0.1", port, timeout=10)
                s.sendmail("buyer@partner.example", ["ana.ortega@northwind.example"],
                           f"Subject: crane order {i}\r\nMessage-ID: <seg-{i}@partner.example>\r\n\r\n"
                           f"Please confirm the crane order number {i}.\r\n")
                s.quit()
            res = srv.wait_for("subject:crane", expected=8)
            self.assertEqual(res["total"], 8, srv.server_log()[-2000:])
            self.assertEqual([h["id"] for h in res["results"]], list(range(8, 0, -1)))
            segs = srv.cli("segments")["segments"]
            self.assertEqual([(s["first"], s["last"]) for s in segs], [(1, 3), (4, 6), (7, 8)])
            self.assertEqual(srv.wait_for('"confirm the crane order"', expected=8)["total"], 8)
            self.assertEqual(srv.search("id:seg-5@partner.example")["results"][0]["id"], 6)
            self.assertEqual(srv.cli("show", "7")["envelope"]["mail_from"], "buyer@partner.example")
            report = srv.cli("verify")
            self.assertTrue(report["intact"])
            self.assertEqual(report["records_checked"], 8)
            # The server seals the two closed segments itself, in place, while it runs; search
            # answers the same before and after.
            deadline = time.time() + 30
            while [s["sealed"] for s in srv.cli("segments")["segments"]] != [True, True, False]:
                self.assertLess(time.time(), deadline, srv.server_log()[-2000:])
                time.sleep(0.1)
            self.assertIn("closed index segment", srv.server_log())
            # Each segment's messages are in a store file of its own; the closed ones are sealed
            # (read-only on disk) by the same pass, before their index.
            segs = srv.cli("segments")["segments"]
            self.assertEqual([s["store_sealed"] for s in segs], [True, True, False])
            self.assertEqual([os.path.basename(s["store"]) for s in segs],
                             ["segment-1.mdb", "segment-4.mdb", "segment-7.mdb"])
            self.assertEqual([oct(os.stat(s["store"]).st_mode & 0o777) for s in segs[:2]], ["0o440", "0o440"])
            res = srv.search("subject:crane")
            self.assertEqual([h["id"] for h in res["results"]], list(range(8, 0, -1)))
            self.assertEqual(srv.search('"confirm the crane order"')["total"], 8)
            self.assertEqual(os.listdir(os.path.join(tmp, "data", "index", "segment-4")).count("shard0.sealing"), 0)
            # The writer lock: sealing waits for the server to stop.
            p = srv.run("segments", "seal")
            self.assertNotEqual(p.returncode, 0)
            self.assertIn(b"serve", p.stderr)
        finally:
            self.assertEqual(srv.stop(), 0)
        self.assertEqual(srv.cli("segments", "seal")["sealed"], 2)  # sealed already: nothing left to do
        segs = srv.cli("segments")["segments"]
        self.assertEqual([s["sealed"] for s in segs], [True, True, False])
        self.assertEqual([s["index_documents"] for s in segs], [3, 3, 2])
        self.assertEqual(srv.search("subject:crane")["total"], 8)


    @unittest.skipUnless(TCPSRV, "needs xapian-tcpsrv (Debian's xapian-tools, installed by scripts/setup.sh)")
    def test_sealed_segments_served_by_xapian_tcpsrv(self):
        tmp = tempfile.mkdtemp(prefix="mailark-remote-")
        self.addCleanup(shutil.rmtree, tmp, True)
        srv = Server("", data=os.path.join(tmp, "data"))
        self.assertEqual(srv.cli("segments", "policy", "--max-records", "5")["max_records"], 5)
        mbox = os.path.join(tmp, "in.mbox")
        words = ["rotterdam", "hamburg", "antwerp"]
        with open(mbox, "w") as f:
            for i in range(1, 13):
                f.write(f"From x@partner.example Mon Mar  2 10:00:00 2026\n"
                        f"From: Partner {i} <p{i}@partner.example>\nTo: ana.ortega@northwind.example\n"
                        f"Subject: berth plan {i}\nMessage-ID: <remote-{i}@partner.example>\n"
                        f"Date: Mon, 2 Mar 2026 10:{i:02d}:00 +0000\n\n"
                        f"The {words[i % 3]} berth plan for crane {i}. Quay crane schedule attached.\n\n")
        p = srv.run("import", mbox)
        self.assertEqual(p.returncode, 0, p.stderr)
        segs = srv.cli("segments")["segments"]
        self.assertEqual([(s["first"], s["last"], s["sealed"]) for s in segs],
                         [(1, 5, True), (6, 10, True), (11, 12, False)])
        queries = ["berth", "rotterdam", "subject:plan", "from:p7@partner.example", '"quay crane schedule"',
                   '"berth plan" crane', "berth NOT hamburg", "hamburg OR antwerp", "date:2026-03",
                   # phrases under OR and NOT: checked at once, their documents sent as id terms
                   'hamburg OR "quay crane"', 'berth NOT "crane 7"', 'rotterdam OR "plan for crane 11"',
                   'hamburg AND NOT "berth plan 4"']

        def answers():
            out = {}
            for q in queries:
                r = srv.search(q)
                out[q] = (r["total"], [(h["id"], h["subject"], h["from"]) for h in r["results"]])
            page = srv.run("search", "berth", "--offset", "3", "--limit", "4", "--json")
            self.assertEqual(page.returncode, 0, page.stderr)
            import json
            out["page"] = [h["id"] for h in json.loads(page.stdout)["results"]]
            return out

        local = answers()
        self.assertEqual(local["berth"][0], 12)
        self.assertEqual(local['"quay crane schedule"'][0], 12)
        self.assertEqual(local["page"], [9, 8, 7, 6])
        self.assertEqual(local['hamburg OR "quay crane"'][0], 12)
        self.assertEqual(local['berth NOT "crane 7"'][0], 11)
        self.assertEqual(sorted(h[0] for h in local['rotterdam OR "plan for crane 11"'][1]), [3, 6, 9, 11, 12])
        self.assertEqual(sorted(h[0] for h in local['hamburg AND NOT "berth plan 4"'][1]), [1, 7, 10])

        # The first segment's two shards go to "another machine": copies of their directories, each
        # served by its own xapian-tcpsrv on loopback.
        index = os.path.join(tmp, "data", "index")
        with open(os.path.join(index, "XAPIANDB")) as f:
            stub = f.read().split()
        names = stub[1::2]  # "glass shard0 glass shard1"
        def serve_copies(where, copy_shard=shutil.copytree):
            procs, endpoints = [], []
            for name in names:
                copy = os.path.join(tmp, where, name)
                copy_shard(os.path.join(index, name), copy)
                port = free_port()
                procs.append(subprocess.Popen([TCPSRV, "--interface", "127.0.0.1", "--port", str(port), "--quiet", copy],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                endpoints.append(f"127.0.0.1:{port}")
            for pr in procs:
                self.addCleanup(pr.wait)
                self.addCleanup(pr.kill)
            for e in endpoints:
                deadline = time.time() + 10
                while True:
                    try:
                        socket.create_connection(("127.0.0.1", int(e.split(":")[1])), timeout=1).close()
                        break
                    except OSError:
                        self.assertLess(time.time(), deadline, "xapian-tcpsrv did not start")
                        time.sleep(0.05)
            return procs, endpoints

        procs, endpoints = serve_copies("elsewhere")
        # Shards given in the wrong order are refused: they are not the databases they stand for.
        p = srv.run("segments", "remote", "1", endpoints[1], endpoints[0])
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(b"is not shard 0", p.stderr)
        # A closed segment that is not sealed never goes remote; neither does the live one.
        p = srv.run("segments", "remote", "11", endpoints[0], endpoints[1])
        self.assertIn(b"not sealed", p.stderr)
        self.assertEqual(srv.cli("segments", "remote", "1", *endpoints)["remote"], endpoints)
        self.assertEqual(srv.cli("segments")["segments"][0]["remote"], endpoints)
        # The same answers, in the same order, from local and remote shards together.
        self.assertEqual(answers(), local)
        # Phrases every result must hold are checked while walking the results, so pages and (with
        # --exact) totals stay exact; those under OR or NOT were checked above (answers() == local).
        p = srv.run("search", '"quay crane schedule"', "--exact", "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        # A remote shard that is down is an error that says so, never a shorter answer.
        procs[0].kill()
        procs[0].wait()
        p = srv.run("search", "berth")
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(endpoints[0].encode(), p.stderr)
        # Nor does it stop the gateway: a writer never asks a sealed segment's shards anything (its
        # documents are all in), so an import goes on, and `segments` says which shard is down.
        more = os.path.join(tmp, "more.mbox")
        with open(more, "w") as f:
            f.write("From x@partner.example Mon Mar  2 10:00:00 2026\nFrom: late@partner.example\n"
                    "Subject: late berth plan\nMessage-ID: <remote-late@partner.example>\n\nA late plan.\n\n")
        p = srv.run("import", more)
        self.assertEqual(p.returncode, 0, p.stderr)
        listed = srv.cli("segments")["segments"]
        self.assertIn("unreachable", listed[0]["remote"][0])
        self.assertEqual(listed[-1]["last"], 13)
        # Back to the local shards.
        self.assertEqual(srv.cli("segments", "local", "1")["remote"], [])
        self.assertEqual(srv.search("berth")["total"], 13)
        self.assertEqual(srv.search("subject:late")["results"][0]["id"], 13)

        # Shards indexed before documents had id terms (copied here without them, with Xapian's own
        # Python bindings): a phrase under OR is refused, naming the way out, never answered without
        # their documents; everything else still works.
        def copy_without_id_terms(src, dst):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            subprocess.run(["/usr/bin/python3", "-c", COPY_WITHOUT_ID_TERMS, src, dst], check=True)

        _, older = serve_copies("older", copy_without_id_terms)
        self.assertEqual(srv.cli("segments", "remote", "1", *older)["remote"], older)
        p = srv.run("search", 'hamburg OR "quay crane"')
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(b"id terms", p.stderr)
        self.assertIn(b"mailark reindex", p.stderr)
        self.assertEqual(srv.search("berth")["total"], 13)
        self.assertEqual(srv.search('"quay crane schedule"')["total"], 12)


# Copies a shard (argv[1]) to a new database (argv[2]) with every document at its own id, but without
# its id term (Q<id>), as an index built before them. The shards have no termlist table, so documents
# are put together from the posting lists and value streams.
COPY_WITHOUT_ID_TERMS = """
import sys, xapian
src = xapian.Database(sys.argv[1])
out = xapian.WritableDatabase(sys.argv[2], xapian.DB_CREATE)
docs = {}
for t in src.allterms():
    if t.term.startswith(b"Q"):
        continue
    for p in src.postlist(t.term):
        docs.setdefault(p.docid, xapian.Document()).add_term(t.term, p.wdf)
for slot in range(16):
    for v in src.valuestream(slot):
        docs[v.docid].add_value(slot, v.value)
for docid in sorted(docs):
    docs[docid].set_data(src.get_document(docid).get_data())
    out.replace_document(docid, docs[docid])
for key in src.metadata_keys():
    out.set_metadata(key, src.get_metadata(key))
out.commit()
"""


if __name__ == "__main__":
    unittest.main()
