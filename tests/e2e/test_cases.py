"""eDiscovery cases (engine/cases.h): a case from creation to export, legal holds that keep what
arrives later and that a close cannot drop, and the audit log: every search, view, export and case
change is in it, hash-chained, exported with a signed head that tests/e2e/tlog.py checks without
mailark, and a command whose entry cannot be written shows nothing (fail closed)."""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

import tlog
from harness import BIN

SOURCE = os.environ.get("MAILARK_SOURCE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEMO = os.path.join(SOURCE, "demo", "mailbox.mbox")
CASE = "Acme v. Northwind"


class CasesTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mailark-cases-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.data = os.path.join(self.tmp, "data")
        self.cli("import", DEMO, "--custodian", "Ana Ortega")
        self.vkey = self.cli("checkpoint", "key").stdout.decode().strip()

    def cli(self, *args, ok=True):
        p = subprocess.run([BIN, "--data", self.data, *args], capture_output=True, timeout=120)
        if ok:
            self.assertEqual(p.returncode, 0, f"mailark {' '.join(args)}: {p.stderr.decode()}")
        return p

    def js(self, *args):
        return json.loads(self.cli(*args, "--json").stdout)

    def audit(self):
        return self.js("audit", "list", "--limit", "1000")

    def test_a_case_from_creation_to_export(self):
        self.cli("case", "create", CASE, "--description", "supply contract", "--custodian", "Ana Ortega")
        # A name is unique without case; a number is an id, never a name.
        p = self.cli("case", "create", CASE.upper(), ok=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("exists", p.stderr.decode())
        self.assertEqual(self.cli("case", "create", "42", ok=False).returncode, 2)
        found = self.js("case", "search", "acme", "customs", "--save")  # the start of its name will do
        self.assertEqual(found["total"], 2)
        dated = self.js("case", "search", "1", "", "--from", "2026-03-02", "--to", "2026-03-02", "--save")
        self.assertGreater(dated["total"], 2)
        self.assertEqual(self.cli("case", "search", "1", "x", "--from", "2026-13-01", ok=False).returncode, 2)
        shown = self.js("case", "show", CASE)
        self.assertEqual([s["messages"] for s in shown["searches"]], [2, dated["total"]])
        self.assertEqual(shown["messages"], dated["total"])  # the customs mail is within those dates
        out = os.path.join(self.tmp, "acme.zip")
        exp = self.js("case", "export", CASE, "--out", out)
        self.assertEqual(exp["messages"], dated["total"])
        verified = json.loads(self.cli("verify-export", out, "--key", self.vkey, "--json").stdout)
        self.assertTrue(verified["ok"], verified)
        self.assertEqual(verified["case"], CASE)
        self.cli("case", "note", "1", "sent to opposing counsel")
        self.assertEqual(self.js("case", "show", "1")["notes"][0]["text"], "sent to opposing counsel")

    def test_a_case_of_many_custodians_is_searched_counted_held_and_exported(self):
        # A company-wide case: 1,500 custodians are more words than one typed query may hold (1,024);
        # the case's scope is outside that bound, the typed search is not (engine/cases.h case_scope).
        people = [f"Custodian {i}" for i in range(1, 1500)] + ["Ana Ortega"]
        args = []
        for who in people:
            args += ["--custodian", who]
        self.cli("case", "create", CASE, *args)
        found = self.js("case", "search", CASE, "customs", "--save")
        self.assertEqual(found["total"], 2)  # as in a case of Ana alone (test_a_case_from_creation_to_export)
        dated = self.js("case", "search", CASE, "", "--from", "2026-03-02", "--to", "2026-03-02", "--save")
        self.assertGreater(dated["total"], 2)
        shown = self.js("case", "show", CASE)
        self.assertEqual([s["messages"] for s in shown["searches"]], [2, dated["total"]])
        self.assertEqual(shown["messages"], dated["total"])
        self.cli("case", "hold", CASE, "--reason", "company-wide notice")
        self.assertTrue(self.js("case", "show", CASE)["hold"])
        out = os.path.join(self.tmp, "wide.zip")
        self.assertEqual(self.js("case", "export", CASE, "--out", out)["messages"], dated["total"])
        # The typed search itself is still bounded, with an error that says so.
        words = " OR ".join(f"w{i}" for i in range(1025))
        p = self.cli("case", "search", CASE, words, ok=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("at most 1024", p.stderr.decode())

    def test_a_hold_keeps_what_arrives_later_and_a_close_cannot_drop_it(self):
        self.cli("case", "create", CASE, "--custodian", "Ana Ortega")
        self.cli("case", "search", CASE, "berth", "--save")
        before = self.js("case", "show", CASE)["messages"]
        self.cli("case", "hold", CASE, "--reason", "litigation notice")
        self.assertEqual(self.cli("case", "hold", CASE, ok=False).returncode, 2)  # already held
        # Mail that arrives after the hold and matches is held too: a hold is its searches.
        late = os.path.join(self.tmp, "late.eml")
        with open(late, "wb") as f:
            f.write(b"From: ops@harbour-logistics.example\r\nTo: ana@northwind.example\r\n"
                    b"Subject: Berth change\r\nMessage-ID: <late-1@harbour.example>\r\n"
                    b"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\nThe berth moves to 7.\r\n")
        self.cli("import", late, "--custodian", "Ana Ortega")
        shown = self.js("case", "show", CASE)
        self.assertTrue(shown["hold"])
        self.assertEqual(shown["messages"], before + 1)
        p = self.cli("case", "close", CASE, ok=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("under legal hold", p.stderr.decode())
        self.assertEqual(self.cli("case", "release", CASE, ok=False).returncode, 2)  # a release needs --reason
        self.cli("case", "release", CASE, "--reason", "settled")
        self.cli("case", "close", CASE)
        self.assertEqual(self.cli("case", "hold", CASE, ok=False).returncode, 2)  # closed
        actions = [(e["action"], e["detail"].get("reason")) for e in self.audit() if e["action"].startswith("case.")
                   and e["action"] in ("case.hold", "case.release", "case.close")]
        self.assertEqual(actions, [("case.hold", "litigation notice"), ("case.release", "settled"), ("case.close", None)])

    def test_every_search_view_and_export_is_in_the_audit_log(self):
        self.cli("search", "customs")
        self.cli("show", "3")
        self.cli("show", "4", "--raw")
        out = os.path.join(self.tmp, "all.zip")
        self.cli("export", "berth", "--out", out)
        self.cli("case", "create", CASE)
        entries = self.audit()
        self.assertEqual([(e["action"], e["target"]) for e in entries],
                         [("search", "customs"), ("show", "3"), ("show.raw", "4"), ("export", "berth"),
                          ("case.create", CASE)])
        self.assertTrue(all(e["actor"].startswith("cli:") for e in entries))
        self.assertEqual(entries[0]["detail"]["total"], 2)
        self.assertEqual(entries[3]["detail"]["messages"], 3)  # the three berth messages of the demo
        self.assertEqual(self.js("audit", "verify")["entries"], 5)

        # The exported log checks without mailark; one changed byte anywhere in an entry does not.
        log = os.path.join(self.tmp, "audit.jsonl")
        self.cli("audit", "export", "--out", log)
        checked = tlog.verify_audit_export(log, self.vkey)
        self.assertEqual([e["action"] for e in checked][:5], ["search", "show", "show.raw", "export", "case.create"])
        with open(log, "rb") as f:
            original = f.read()
        second = original.index(b"\n") + 1  # the first entry's line
        for pos in (original.index(b"customs", second), original.index(b"cli:", second)):
            bad = bytearray(original)
            bad[pos] ^= 1
            with open(log, "wb") as f:
                f.write(bad)
            with self.assertRaises(ValueError):
                tlog.verify_audit_export(log, self.vkey)
        # An entry cut from the end does not reach the signed head.
        with open(log, "wb") as f:
            f.write(original[:original.rstrip(b"\n").rindex(b"\n") + 1])
        with self.assertRaises(ValueError):
            tlog.verify_audit_export(log, self.vkey)

    def test_changes_to_the_user_directory_are_in_the_audit_log(self):
        p = subprocess.run([BIN, "--data", self.data, "user", "add", "oli@example.com", "--password-stdin"],
                           input=b"a-long-password-1\n", capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        self.cli("user", "role", "oli@example.com", "auditor")
        self.cli("user", "list")  # reading is not a change
        entries = [(e["action"], e["target"], e["detail"]) for e in self.audit()]
        self.assertEqual(entries, [("user.add", "oli@example.com", {"aliases": [], "role": "user"}),
                                   ("user.role", "oli@example.com", {"args": ["auditor"]})])
        self.assertNotIn("a-long-password-1", json.dumps(self.audit()))

    def test_a_search_whose_audit_entry_cannot_be_written_shows_nothing(self):
        self.cli("search", "customs")
        shutil.rmtree(os.path.join(self.data, "cases"))
        with open(os.path.join(self.data, "cases"), "w") as f:  # the store cannot be opened
            f.write("not a folder")
        for args in (("search", "customs"), ("show", "3")):
            p = self.cli(*args, ok=False)
            self.assertNotEqual(p.returncode, 0)
            self.assertEqual(p.stdout, b"", args)
            self.assertIn("cannot write the audit log", p.stderr.decode())
        # An export is written, then logged: one whose entry cannot be written is removed.
        out = os.path.join(self.data, "..", "unlogged-export.zip")
        p = self.cli("export", "customs", "--out", out, ok=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("cannot write the audit log", p.stderr.decode())
        self.assertFalse(os.path.exists(out), "an export nobody can see in the log is not left behind")


if __name__ == "__main__":
    unittest.main()
