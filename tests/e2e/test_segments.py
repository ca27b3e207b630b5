"""Time segments under a running server: mail arriving by SMTP cuts segments as the archive's policy
says, search, show and verify span them while the server runs, and `mailark segments seal` seals the
closed ones once it has stopped (engine/archive.h "Time segments", docs/FORMAT.md)."""
import os
import shutil
import smtplib
import tempfile
import unittest

from harness import Server, free_port


class SegmentsTest(unittest.TestCase):
    def test_smtp_mail_cuts_segments_that_search_spans(self):
        tmp = tempfile.mkdtemp(prefix="mailark-segments-")
        self.addCleanup(shutil.rmtree, tmp, True)
        port = free_port()
        srv = Server(f"""
[[listener]]
role = "inbound"
port = {port}
tls = "none"
[inbound]
domains = ["northwind.example"]
verify_recipients = "none"
[delivery]
primary = ["127.0.0.1:{free_port()}"]
[archive]
index_commit_interval_ms = 100
""", data=os.path.join(tmp, "data"))
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
            # The writer lock: sealing waits for the server to stop.
            p = srv.run("segments", "seal")
            self.assertNotEqual(p.returncode, 0)
            self.assertIn(b"serve", p.stderr)
        finally:
            self.assertEqual(srv.stop(), 0)
        self.assertEqual(srv.cli("segments", "seal")["sealed"], 2)
        segs = srv.cli("segments")["segments"]
        self.assertEqual([s["sealed"] for s in segs], [True, True, False])
        self.assertEqual([s["index_documents"] for s in segs], [3, 3, 2])
        self.assertEqual(srv.search("subject:crane")["total"], 8)


if __name__ == "__main__":
    unittest.main()
