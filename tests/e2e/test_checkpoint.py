"""Signed checkpoints and proofs, checked without mailark (tests/e2e/tlog.py: RFC 9162, C2SP
checkpoints and signed notes, the record format of docs/FORMAT.md), and `verify --checkpoint`
against the attacks it exists for: records cut from the end, an older copy put back, another
archive's history in its place. The server publishes checkpoints to a folder and a command."""
import glob
import hashlib
import http.server
import threading
import os
import shutil
import smtplib
import subprocess
import tempfile
import time
import unittest

import tlog
from harness import BIN, Server, free_port

SOURCE = os.environ.get("MAILARK_SOURCE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEMO = os.path.join(SOURCE, "demo", "mailbox.mbox")


def write_mbox(path, tag, count):
    with open(path, "w") as f:
        for i in range(count):
            f.write(f"From sender@partner.example Mon Mar  2 10:00:00 2026\n"
                    f"From: sender@partner.example\nTo: ana.ortega@northwind.example\n"
                    f"Subject: {tag} {i}\nMessage-ID: <{tag}-{i}@partner.example>\n"
                    f"Date: Mon, 2 Mar 2026 10:{i:02d}:00 +0000\n\n{tag} body {i}\n\n")


class CheckpointTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mailark-checkpoint-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.data = os.path.join(self.tmp, "data")

    def run_cli(self, *args, data=None, ok=True):
        p = subprocess.run([BIN, "--data", data or self.data, *args], capture_output=True, timeout=120)
        if ok:
            self.assertEqual(p.returncode, 0, f"mailark {' '.join(args)}: {p.stderr.decode()}")
        return p

    def json(self, *args, data=None):
        import json
        return json.loads(self.run_cli(*args, data=data).stdout)

    def import_mbox(self, tag, count, data=None):
        path = os.path.join(self.tmp, f"{tag}.mbox")
        write_mbox(path, tag, count)
        self.run_cli("import", path, data=data)

    def checkpoint(self, name, data=None):
        path = os.path.join(self.tmp, name)
        self.run_cli("checkpoint", "--out", path, data=data)
        with open(path, "rb") as f:
            return path, f.read()

    def test_checkpoints_and_proofs_check_without_mailark(self):
        self.run_cli("import", DEMO)
        vkey = self.run_cli("checkpoint", "key").stdout.decode().strip()
        path1, note1 = self.checkpoint("c1")
        origin, size1, root1, ext = tlog.open_checkpoint(note1, vkey)
        self.assertEqual(size1, 10)
        self.assertTrue(origin.startswith("mailark.archive/"), origin)
        self.assertTrue(any(e.startswith("time ") for e in ext), ext)

        # Every record: its inclusion proof checks against the signed root, its record checks its own
        # hash, and the record names the SHA-256 of the bytes `show --raw` gives.
        for seq in range(1, size1 + 1):
            proof = self.json("checkpoint", "prove", str(seq), "--size", str(size1))
            record = tlog.base64.b64decode(proof["record"])
            leaf = tlog.leaf_hash(record)
            self.assertEqual(leaf.hex(), proof["leaf_hash"])
            self.assertTrue(tlog.verify_inclusion(seq - 1, size1, leaf, [bytes.fromhex(h) for h in proof["proof"]],
                                                  root1), seq)
            fields = tlog.parse_record(record)
            self.assertEqual(fields["seq"], seq)
            raw = self.run_cli("show", str(seq), "--raw").stdout
            self.assertEqual(hashlib.sha256(raw).digest(), fields["content_sha256"], seq)
            self.assertEqual(len(raw), fields["raw_size"])
            # A proof for another record's bytes does not check.
            other = tlog.leaf_hash(record[:-1] + bytes([record[-1] ^ 1]))
            self.assertFalse(tlog.verify_inclusion(seq - 1, size1, other, [bytes.fromhex(h) for h in proof["proof"]],
                                                   root1))

        # The archive grows; the new checkpoint extends the old one, as a consistency proof shows.
        self.import_mbox("later", 13)
        _, note2 = self.checkpoint("c2")
        _, size2, root2, _ = tlog.open_checkpoint(note2, vkey)
        self.assertEqual(size2, 23)
        cons = self.json("checkpoint", "consistency", str(size1))
        self.assertEqual((cons["old_size"], cons["new_size"]), (size1, size2))
        proof = [bytes.fromhex(h) for h in cons["proof"]]
        self.assertTrue(tlog.verify_consistency(size1, size2, root1, root2, proof))
        self.assertFalse(tlog.verify_consistency(size1, size2, tlog.sha256(b"another history"), root2, proof))

        # mailark agrees: both checkpoints hold.
        p = self.run_cli("verify", "--checkpoint", path1, "--checkpoint", os.path.join(self.tmp, "c2"), "--key", vkey)
        self.assertIn(b"holds (10 records", p.stdout)
        self.assertIn(b"holds (23 records", p.stdout)

        # One changed byte anywhere in the checkpoint's text: neither verifier accepts it.
        text_end = note1.index(b"\n\n")
        for i in range(0, text_end, 7):
            bent = bytearray(note1)
            bent[i] = ord("1") if bent[i] != ord("1") else ord("2")
            with self.assertRaises(Exception, msg=f"byte {i}"):
                tlog.open_checkpoint(bytes(bent), vkey)
            bent_path = os.path.join(self.tmp, "bent")
            with open(bent_path, "wb") as f:
                f.write(bent)
            p = self.run_cli("verify", "--checkpoint", bent_path, ok=False)
            self.assertNotEqual(p.returncode, 0, f"byte {i}")
            self.assertTrue(b"signature does not check" in p.stderr or b"another archive" in p.stderr
                            or b"checkpoint" in p.stderr, p.stderr)

    def test_verify_detects_truncation_rollback_and_another_history(self):
        self.import_mbox("first", 10)
        backup = os.path.join(self.tmp, "backup")
        shutil.copytree(self.data, backup)  # a copy taken now, to be put back later
        self.import_mbox("second", 6)
        path, _ = self.checkpoint("c16")
        vkey = self.run_cli("checkpoint", "key").stdout.decode().strip()
        report = self.json("verify", "--checkpoint", path, "--json")
        self.assertTrue(report["intact"], report)
        self.assertTrue(report["checkpoints"][0]["holds"])

        # The older copy put back (a rollback, or records cut from the end): the chain alone is intact.
        shutil.rmtree(self.data)
        shutil.copytree(backup, self.data)
        alone = self.json("verify", "--json")
        self.assertTrue(alone["intact"], "the older copy is a consistent archive by itself")
        p = self.run_cli("verify", "--checkpoint", path, "--key", vkey, "--json", ok=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        import json
        report = json.loads(p.stdout)
        self.assertFalse(report["intact"])
        self.assertFalse(report["checkpoints"][0]["holds"])
        self.assertIn("removed from the end, or an older copy", report["checkpoints"][0]["problem"])

        # Other mail archived on the older copy until it has as many records: another history.
        self.import_mbox("other", 6)
        p = self.run_cli("verify", "--checkpoint", path, "--key", vkey, ok=False)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(b"records 1 to 16 are not those the checkpoint signed", p.stdout)

        # A checkpoint of another archive is refused as such, whatever its key.
        other = os.path.join(self.tmp, "other-data")
        self.import_mbox("elsewhere", 3, data=other)
        foreign, _ = self.checkpoint("foreign", data=other)
        p = self.run_cli("verify", "--checkpoint", foreign, ok=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(b"another archive", p.stderr)

    def test_the_server_publishes_checkpoints(self):
        received = []

        class Sink(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.headers["Content-Type"], body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        hook = http.server.HTTPServer(("127.0.0.1", 0), Sink)
        threading.Thread(target=hook.serve_forever, daemon=True).start()
        self.addCleanup(hook.shutdown)
        port = free_port()
        folder = os.path.join(self.tmp, "published")
        piped = os.path.join(self.tmp, "piped")
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
[checkpoints]
publish = ["file:{folder}", "command:cat > {piped}.$MAILARK_CHECKPOINT_SIZE",
           "http://127.0.0.1:{hook.server_address[1]}/checkpoints", "command:exit 3", "command:sleep 30"]
every = 1
timeout = 1
""", data=self.data)
        self.addCleanup(srv.cleanup)
        srv.start()
        for i in range(3):
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
                s.sendmail("sender@partner.example", ["ana.ortega@northwind.example"],
                           f"From: sender@partner.example\r\nTo: ana.ortega@northwind.example\r\n"
                           f"Subject: published {i}\r\nMessage-ID: <pub-{i}@partner.example>\r\n\r\nbody {i}\r\n")
        deadline = time.time() + 30
        while not glob.glob(os.path.join(folder, "*-3.checkpoint")) and time.time() < deadline:
            time.sleep(0.2)
        files = glob.glob(os.path.join(folder, "*-3.checkpoint"))
        self.assertTrue(files, srv.server_log())
        vkey = self.run_cli("checkpoint", "key").stdout.decode().strip()
        with open(files[0], "rb") as f:
            origin, size, root, _ = tlog.open_checkpoint(f.read(), vkey)
        self.assertEqual(size, 3)
        deadline = time.time() + 30
        while not os.path.exists(piped + ".3") and time.time() < deadline:
            time.sleep(0.2)
        with open(piped + ".3", "rb") as f:
            self.assertEqual(tlog.open_checkpoint(f.read(), vkey)[2], root)
        deadline = time.time() + 30
        while not any(tlog.open_checkpoint(b, vkey)[1] == 3 for _, b in received) and time.time() < deadline:
            time.sleep(0.2)
        posted = [b for _, b in received if tlog.open_checkpoint(b, vkey)[1] == 3]
        self.assertTrue(posted, received)
        self.assertEqual(tlog.open_checkpoint(posted[0], vkey)[2], root)
        self.assertTrue(received[0][0].startswith("text/plain"), received[0][0])
        # A failing and a hanging target are logged and tried again; mail went on meanwhile (the
        # three messages above were each answered 250 while they failed).
        self.assertIn("not published to command:exit 3: exited with status 3", srv.server_log())
        self.assertIn("not published to command:sleep 30: timed out after 1 s", srv.server_log())
        self.assertEqual(srv.stop(), 0)
        p = self.run_cli("verify", "--checkpoint", files[0])
        self.assertIn(b"holds (3 records", p.stdout)


if __name__ == "__main__":
    unittest.main()
