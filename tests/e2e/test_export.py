"""eDiscovery exports: `mailark export` writes what a query finds with a manifest, proofs and a signed
checkpoint; `mailark verify-export` and an independent verifier in Python (tlog.verify_export: RFC
9162, C2SP signed notes, zipfile, python3-cryptography) check them without the archive, and a changed
byte anywhere in an entry's name or contents is caught."""
import json
import os
import shutil
import subprocess
import tempfile
import unittest
import zipfile

import tlog
from harness import BIN

SOURCE = os.environ.get("MAILARK_SOURCE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEMO = os.path.join(SOURCE, "demo", "mailbox.mbox")

# Messages whose bodies have lines an mbox must quote, and one that does not end with a newline.
TRICKY = [
    b"From: ana@partner.example\r\nTo: ben@northwind.example\r\nSubject: quoting one\r\n"
    b"Message-ID: <quote-1@partner.example>\r\n\r\nFrom the start of a line.\r\n>From quoted once.\r\n"
    b">>From quoted twice.\r\nNot From here.\r\n",
    b"From: ana@partner.example\nTo: ben@northwind.example\nSubject: quoting two\n"
    b"Message-ID: <quote-2@partner.example>\n\nFrom here to there\n>From\nFrom",
]


class ExportTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mailark-export-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.data = os.path.join(self.tmp, "data")
        self.run_cli("import", DEMO, "--custodian", "Ana Ortega")
        for i, raw in enumerate(TRICKY):
            path = os.path.join(self.tmp, f"tricky{i}.eml")
            with open(path, "wb") as f:
                f.write(raw)
            self.run_cli("import", path, "--custodian", "ben@northwind.example")
        self.vkey = self.run_cli("checkpoint", "key").stdout.decode().strip()

    def run_cli(self, *args, ok=True):
        p = subprocess.run([BIN, "--data", self.data, *args], capture_output=True, timeout=120)
        if ok:
            self.assertEqual(p.returncode, 0, f"mailark {' '.join(args)}: {p.stderr.decode()}")
        return p

    def export(self, query, name, fmt="eml"):
        path = os.path.join(self.tmp, name)
        out = json.loads(self.run_cli("export", query, "--out", path, "--format", fmt, "--case", "Acme v. Northwind",
                                      "--json").stdout)
        return path, out

    def verify(self, path, key=None):
        p = self.run_cli("verify-export", path, "--key", key or self.vkey, "--json", ok=False)
        return p.returncode, json.loads(p.stdout) if p.stdout else {"problem": p.stderr.decode()}

    def assert_flips_caught(self, original, positions, what):
        """Each position's low bit flipped in turn: verify-export says the export does not check (exit
        1) and tlog.verify_export raises."""
        bent_path = os.path.join(self.tmp, "bent.zip")
        for pos in positions:
            bent = bytearray(original)
            bent[pos] ^= 0x01
            with open(bent_path, "wb") as f:
                f.write(bent)
            rc, rep = self.verify(bent_path)
            self.assertEqual(rc, 1, f"{what}: the byte at {pos} changed and verify-export said {rep}")
            with self.assertRaises(Exception, msg=f"{what}: byte {pos}"):
                tlog.verify_export(bent_path, self.vkey)

    def test_eml_and_mbox_exports_check_with_both_verifiers(self):
        for fmt in ("eml", "mbox"):
            path, out = self.export("", f"all.{fmt}.zip", fmt)
            self.assertEqual(out["messages"], 12)
            rc, rep = self.verify(path)
            self.assertEqual(rc, 0, rep)
            self.assertTrue(rep["ok"])
            self.assertEqual(rep["messages"], 12)
            self.assertEqual(rep["case"], "Acme v. Northwind")
            self.assertFalse(rep["key_from_export"])
            self.assertEqual(tlog.verify_export(path, self.vkey), 12)
            with zipfile.ZipFile(path) as z:
                lines = [json.loads(x) for x in z.read("manifest.jsonl").decode().splitlines()]
                if fmt == "eml":
                    # Every message file is the archive's exact bytes.
                    for m in lines[1:]:
                        raw = self.run_cli("show", str(m["id"]), "--raw").stdout
                        self.assertEqual(z.read(m["file"]), raw, m["id"])
                else:
                    mbox = z.read("messages.mbox")
                    self.assertIn(b"\n>From the start of a line.", mbox)
                    self.assertIn(b"\n>>From quoted once.", mbox)
                    self.assertIn(b"\n>>>From quoted twice.", mbox)
            header, entries = lines[0], lines[1:]
            self.assertEqual(header["query"], "")
            self.assertEqual([m["id"] for m in entries], list(range(1, 13)))
            by_subject = {m["message_id"]: m for m in entries}
            self.assertIn("quote-2@partner.example", by_subject)
            # Each line names its own message's Message-ID (asked of the index a batch at a time).
            found = json.loads(self.run_cli("search", "", "--json", "--limit", "50").stdout)["results"]
            self.assertEqual({m["id"]: m["message_id"] for m in entries}, {r["id"]: r["message_id"] for r in found})
            infected = [m for m in entries if m["verdict"]["kind"] == "infected"]
            self.assertEqual(len(infected), 1, "the demo mailbox has one EICAR message")
            self.assertEqual([m["custodians"] for m in entries], [["Ana Ortega"]] * 10 + [["ben@northwind.example"]] * 2)
            self.assertTrue(all(m["copies"] == [] for m in entries))

    def test_every_custodians_copy_is_listed_and_proved(self):
        # A second mailbox holds the demo's ten messages too: ten more records over the same bytes.
        out = json.loads(self.run_cli("import", DEMO, "--custodian", "Legal Copy", "--json").stdout)
        self.assertEqual((out["imported"], out["duplicates"]), (10, 0))
        found = json.loads(self.run_cli("search", "", "--json").stdout)
        self.assertEqual(found["total"], 12, "one hit a message, however many hold it")
        mine = json.loads(self.run_cli("search", 'custodian:"legal copy"', "--json", "--limit", "50").stdout)
        self.assertEqual(sorted(r["id"] for r in mine["results"]), list(range(13, 23)))
        show = json.loads(self.run_cli("show", "1", "--json").stdout)
        self.assertEqual([(c["id"], c["custodians"]) for c in show["copies"]], [(1, ["Ana Ortega"]), (13, ["Legal Copy"])])
        for fmt in ("eml", "mbox"):
            path, out = self.export("", f"copies.{fmt}.zip", fmt)
            self.assertEqual(out["messages"], 12)
            self.assertEqual(self.verify(path)[0], 0)
            self.assertEqual(tlog.verify_export(path, self.vkey), 12)
            with zipfile.ZipFile(path) as z:
                entries = [json.loads(x) for x in z.read("manifest.jsonl").decode().splitlines()[1:]]
            demo = [m for m in entries if m["custodians"] != ["ben@northwind.example"]]
            self.assertEqual(len(demo), 10)
            for m in demo:
                self.assertEqual(m["custodians"], ["Ana Ortega", "Legal Copy"], m["id"])
                self.assertEqual([c["custodians"] for c in m["copies"]], [["Legal Copy"] if m["id"] <= 10 else ["Ana Ortega"]])
                self.assertEqual(m["copies"][0]["envelope"]["custodian"], m["copies"][0]["custodians"][0])
        # The copies are proved like the records they stand beside: a changed byte in one is caught.
        with open(path, "rb") as f:
            original = f.read()
        at = original.index(b'"custodian":"Legal Copy"')
        record_at = original.index(b'"record":"', at) + 12
        self.assert_flips_caught(original, [at + 14, record_at, record_at + 40], "a copy")
        # Asked for one custodian's copies, the export still names everyone who held each message.
        path, out = self.export('custodian:"legal copy"', "legal.zip")
        self.assertEqual(out["messages"], 10)
        self.assertEqual(tlog.verify_export(path, self.vkey), 10)

    def test_custodian_per_folder_loads_many_mailboxes_at_once(self):
        # One folder per custodian (as the Enron corpus is laid out): the same message in alice's
        # Maildir inbox and twice in bob's folders is two records, alice's and bob's, each with the
        # folder it was found in; a file directly inside the root belongs to nobody.
        root = os.path.join(self.tmp, "mailboxes")
        raw = (b"From: ana@partner.example\r\nTo: alice@northwind.example, bob@northwind.example\r\n"
               b"Subject: shared plan\r\nMessage-ID: <shared-plan@partner.example>\r\n\r\nthe shared plan\r\n")
        for rel in ("alice/inbox/cur/1.eml", "bob/projects/acme/2.eml", "bob/sent/1.eml"):
            os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
            with open(os.path.join(root, rel), "wb") as f:
                f.write(raw)
        with open(os.path.join(root, "loose.eml"), "wb") as f:
            f.write(b"From: x@partner.example\r\nSubject: loose\r\nMessage-ID: <loose@partner.example>\r\n\r\nloose\r\n")
        out = json.loads(self.run_cli("import", "--custodian-per-folder", root, "--json").stdout)
        self.assertEqual((out["imported"], out["duplicates"]), (3, 1), out)
        hits = json.loads(self.run_cli("search", "id:shared-plan@partner.example", "--json").stdout)
        self.assertEqual(hits["total"], 1)
        show = json.loads(self.run_cli("show", str(hits["results"][0]["id"]), "--json").stdout)
        copies = {c["custodians"][0]: c["folder"] for c in show["copies"]}
        self.assertEqual(set(copies), {"alice", "bob"})
        self.assertEqual(copies["alice"], "inbox", "a Maildir's cur/new is not part of the folder")
        self.assertIn(copies["bob"], ("projects/acme", "sent"), "bob's first copy found")
        loose = json.loads(self.run_cli("search", "id:loose@partner.example", "--json").stdout)["results"][0]
        self.assertNotIn("custodian", json.loads(self.run_cli("show", str(loose["id"]), "--json").stdout)["envelope"])
        p = self.run_cli("import", "--custodian", "x", "--custodian-per-folder", root, ok=False)
        self.assertEqual(p.returncode, 2, "the two ways of naming custodians exclude each other")
        for bad in ("x" * 201, "two\nlines", "tab\there", "   "):
            p = self.run_cli("import", "--custodian", bad, root, ok=False)
            self.assertEqual(p.returncode, 2, repr(bad))
            self.assertIn(b"--custodian", p.stderr)

    def test_a_query_exports_what_it_finds_and_nothing_else(self):
        found = json.loads(self.run_cli("search", '"quoted once"', "--exact", "--json").stdout)
        path, out = self.export('"quoted once"', "phrase.zip")
        self.assertEqual(out["messages"], found["total"])
        self.assertEqual(out["messages"], 1)
        self.assertEqual(tlog.verify_export(path, self.vkey), 1)
        path, out = self.export("nothingmatchesthis", "none.zip")
        self.assertEqual(out["messages"], 0)
        rc, rep = self.verify(path)
        self.assertEqual(rc, 0, rep)
        self.assertEqual(tlog.verify_export(path, self.vkey), 0)

    def test_another_key_is_refused(self):
        path, _ = self.export("", "all.zip")
        other = os.path.join(self.tmp, "other")
        subprocess.run([BIN, "--data", other, "import", DEMO], capture_output=True, check=True, timeout=120)
        other_key = subprocess.run([BIN, "--data", other, "checkpoint", "key"], capture_output=True, check=True,
                                   timeout=60).stdout.decode().strip()
        rc, rep = self.verify(path, other_key)
        self.assertEqual(rc, 1)
        self.assertIn("signature does not check", rep["problem"])
        with self.assertRaises(ValueError):
            tlog.verify_export(path, other_key)

    def test_a_changed_byte_in_any_entry_is_caught(self):
        for fmt in ("eml", "mbox"):
            path, _ = self.export("", f"bytes.{fmt}.zip", fmt)
            with open(path, "rb") as f:
                original = f.read()
            with zipfile.ZipFile(path) as z:
                infos = z.infolist()
                comment = len(z.comment)
            # Where each entry's name and data are in the file (stored entries: the data follows the
            # local header, 30 bytes, the name and the extra field).
            regions = []
            for info in infos:
                name_at = info.header_offset + 30
                extra_len = int.from_bytes(original[info.header_offset + 28:info.header_offset + 30], "little")
                data_at = name_at + len(info.filename) + extra_len
                regions.append((info.filename, name_at, len(info.filename)))
                regions.append((info.filename, data_at, info.compress_size))
            # And the seal itself (the zip comment, the file's last bytes).
            regions.append(("comment", len(original) - comment, comment))
            positions = set()
            for name, start, length in regions:
                if length == 0:
                    continue
                positions.update({start, start + length - 1, start + length // 2})
                positions.update(range(start, start + length, max(1, length // 6)))
            self.assert_flips_caught(original, sorted(positions), fmt)

    def test_a_changed_byte_in_the_zips_own_records_or_a_damaged_zip_is_caught(self):
        path, _ = self.export("", "cd.zip")
        with open(path, "rb") as f:
            original = f.read()
        with zipfile.ZipFile(path) as z:
            start = z.start_dir  # the central directory: what unzip reads names and places from
        # Even a byte no zip reader uses (a time, an attribute) is sealed.
        self.assert_flips_caught(original, range(start, len(original), max(1, (len(original) - start) // 40)),
                                 f"central directory at {start}")
        for name, data in (("truncated.zip", original[:len(original) // 2]), ("garbage.zip", b"not a zip at all\n")):
            bad = os.path.join(self.tmp, name)
            with open(bad, "wb") as f:
                f.write(data)
            rc, rep = self.verify(bad)
            self.assertEqual(rc, 1, rep)
            self.assertIn("not a readable zip", rep["problem"])


if __name__ == "__main__":
    unittest.main()
