"""Outlook PST import (engine/pst.h): every PST of the corpus imports through libpst, with its folders
and custodian, or says precisely why not; what mailark rebuilds holds what libpst's own converter
(readpst, Debian's pst-utils) writes for the same items; a PST that crashes libpst ends that file's
import with an error, never the import."""
import email
import email.policy
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import unittest

from harness import BIN, CORPUS

PST = os.path.join(CORPUS, "pst")


def have_corpus():
    return os.path.isdir(PST)


def parse(raw):
    return email.message_from_bytes(raw, policy=email.policy.default)


def attachments(msg):
    """File name -> decoded bytes of every attachment with a name, nested messages included."""
    out = {}
    for part in msg.walk():
        name = part.get_filename()
        if name and not part.is_multipart() and part.get_content_type() != "message/rfc822":
            out[name] = part.get_payload(decode=True)
    return out


class PstTest(unittest.TestCase):
    def setUp(self):
        if not have_corpus():
            self.skipTest("corpus not found (set MAILARK_CORPUS): the PST files are in ../shared/corpus/pst")
        self.tmp = tempfile.mkdtemp(prefix="mailark-pst-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.data = os.path.join(self.tmp, "data")

    def cli(self, *args, ok=True):
        p = subprocess.run([BIN, "--data", self.data, *args], capture_output=True, timeout=300)
        if ok:
            self.assertEqual(p.returncode, 0, f"mailark {' '.join(args)}: {p.stderr.decode()}")
        return p

    def import_json(self, *args):
        return json.loads(self.cli("import", "--json", *args).stdout)

    def records(self):
        """Every archived record: id -> (envelope, raw bytes)."""
        hits = json.loads(self.cli("search", "", "--json", "--limit", "1000").stdout)["results"]
        out = {}
        for h in hits:
            env = json.loads(self.cli("show", str(h["id"]), "--json").stdout)["envelope"]
            out[h["id"]] = (env, self.cli("show", str(h["id"]), "--raw").stdout)
        return out

    def test_every_corpus_pst_imports_or_says_why(self):
        got = self.import_json("--custodian", "Terry Mahaffey", PST)
        self.assertEqual(got["imported"], 9, got)
        self.assertEqual(got["errors"], 0, got["error_files"])
        kinds = got["skipped_kinds"]
        self.assertEqual(kinds.get("a contact (IPM.Contact), not mail"), 2, kinds)
        self.assertEqual(kinds.get("an appointment (IPM.Appointment), not mail"), 1, kinds)
        self.assertEqual(kinds.get("a second message store inside the file (libpst reads the first only)"), 3, kinds)
        recs = self.records()
        self.assertEqual(len(recs), 9)
        by_source = {env["source"]: env for env, _ in recs.values()}
        ansi = by_source[os.path.join(PST, "pstsdk-via-pst-exp", "test_ansi.pst") + "#1"]
        self.assertEqual(ansi["folder"], "Folder")
        self.assertEqual(ansi["custodian"], "Terry Mahaffey")
        self.assertEqual(ansi["received_at"], "2008-07-09T18:11:05Z")
        # Searchable like any mail: a word of the embedded message's Japanese body, and a subject.
        hits = json.loads(self.cli("search", "subject:Post", "--json").stdout)
        self.assertEqual(hits["total"], 2)  # test_ansi.pst's post and test_unicode.pst's first
        hits = json.loads(self.cli("search", "outlook", "--json").stdout)
        self.assertIn("I have attachments!", [h["subject"] for h in hits["results"]])  # its embedded message
        # The same store imported again adds nothing: the rebuilt bytes are the same.
        again = self.import_json("--custodian", "Terry Mahaffey", PST)
        self.assertEqual((again["imported"], again["duplicates"]), (0, 9), again)
        self.assertEqual(self.cli("verify").returncode, 0)

    def test_what_mailark_rebuilds_holds_what_readpst_writes(self):
        if not shutil.which("readpst"):
            self.skipTest("readpst not installed (Debian's pst-utils; scripts/setup.sh installs it)")
        self.import_json(PST)
        ours = {}  # (PST file, subject) -> the message mailark rebuilt
        for env, raw in self.records().values():
            ours[(env["source"].rsplit("#", 1)[0], str(parse(raw)["subject"]))] = (parse(raw), raw)
        compared = 0
        for pst in sorted(glob.glob(os.path.join(PST, "*", "*.pst"))):
            out = os.path.join(self.tmp, "readpst", os.path.basename(pst))
            os.makedirs(out)
            subprocess.run(["readpst", "-q", "-e", "-o", out, pst], check=True, capture_output=True, timeout=120)
            for eml in glob.glob(os.path.join(out, "**", "*.eml"), recursive=True):
                with open(eml, "rb") as f:
                    theirs_raw = f.read()
                theirs = parse(theirs_raw)
                subject = str(theirs["subject"])
                self.assertIn((pst, subject), ours, f"{pst}: readpst has {subject!r}, mailark does not")
                mine, mine_raw = ours[(pst, subject)]
                # Every attachment readpst writes, mailark has with the same bytes (readpst adds an
                # rtf-body.rtf when the item also has an RTF body; mailark keeps RTF only when there
                # is no other body).
                theirs_att = {k: v for k, v in attachments(theirs).items() if k != "rtf-body.rtf"}
                mine_att = attachments(mine)
                for name, data in theirs_att.items():
                    self.assertIn(name, mine_att, f"{pst}: {subject}")
                    self.assertEqual(mine_att[name], data, f"{pst}: {subject}: {name}")
                # The same text body, line ends aside.
                tb, mb = theirs.get_body(("plain",)), mine.get_body(("plain",))
                if tb is not None:
                    self.assertIsNotNone(mb, f"{pst}: {subject}")
                    norm = lambda s: " ".join(s.split())
                    self.assertEqual(norm(mb.get_content()), norm(tb.get_content()), f"{pst}: {subject}")
                # The same addressees, where readpst found addresses.
                # (readpst writes Outlook's "a; b" lists as they are, which is not RFC 5322: compare the
                # addresses written, in order.)
                for field in ("to", "cc"):
                    addrs = lambda raw: re.findall(r"[\w.+-]+@[\w.-]+", email.message_from_bytes(raw).get(field, ""))
                    self.assertEqual(addrs(mine_raw), addrs(theirs_raw), f"{pst}: {field}")
                compared += 1
        self.assertGreaterEqual(compared, 6)

    def test_a_damaged_pst_ends_that_file_not_the_import(self):
        # One byte of sample1.pst changed (offset 0x262d0): libpst 0.6.76 (Debian 12) dies with SIGSEGV
        # reading it. The file is made here from the corpus, not kept in the repository.
        damaged = os.path.join(self.tmp, "damaged.pst")
        with open(os.path.join(PST, "pstsdk-via-pst-exp", "sample1.pst"), "rb") as f:
            data = bytearray(f.read())
        data[0x262D0] = 102
        with open(damaged, "wb") as f:
            f.write(data)
        child = subprocess.run([BIN, "pst-read", damaged], capture_output=True, timeout=60)
        if child.returncode != -signal.SIGSEGV:
            self.skipTest(f"this libpst no longer crashes on the damaged file (exit {child.returncode})")
        good = os.path.join(PST, "ruby-msg", "msgInMsg.pst")
        got = self.import_json(damaged, good)
        self.assertEqual(got["imported"], 1, got)
        self.assertEqual(got["errors"], 1, got)
        err = got["error_files"][0]
        self.assertEqual(err["path"], damaged)
        self.assertIn("the PST reader stopped after 0 messages: libpst crashed (signal 11", err["reason"])
        self.assertEqual(self.cli("verify").returncode, 0)
        self.assertFalse(os.path.exists("core"))

    def test_a_folder_of_custodians_psts(self):
        root = os.path.join(self.tmp, "custodians")
        for who, name in (("alice", "attachAndInline.pst"), ("bob", "msgInMsg.pst")):
            os.makedirs(os.path.join(root, who, "exports"))
            shutil.copy(os.path.join(PST, "ruby-msg", name), os.path.join(root, who, "exports", name))
        got = self.import_json("--custodian-per-folder", root)
        self.assertEqual(got["imported"], 2, got)
        envs = sorted((env["custodian"], env.get("folder", "")) for env, _ in self.records().values())
        # The custodian is the folder; the record's folder is the PST's own folder (empty here: these
        # two keep their message at the top of the store).
        self.assertEqual([c for c, _ in envs], ["alice", "bob"])


if __name__ == "__main__":
    unittest.main()
