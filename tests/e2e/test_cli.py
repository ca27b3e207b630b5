"""End-to-end tests: the real `mailark` binary on real files.

Run by ctest (MAILARK_BIN, MAILARK_CORPUS and MAILARK_SOURCE_DIR are set there), or by hand:
  MAILARK_BIN=build/mailark python3 -m unittest -v tests/e2e/test_cli.py
"""
import base64
import email.mime.application
import email.mime.message
import email.mime.multipart
import email.mime.text
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest
import zipfile

BIN = os.environ.get("MAILARK_BIN", "mailark")
SOURCE = os.environ.get("MAILARK_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
# MAILARK_CORPUS (set by the user) wins over the build's default (set by ctest).
CORPUS = (os.environ.get("MAILARK_CORPUS") or os.environ.get("MAILARK_DEFAULT_CORPUS")
          or os.path.join(SOURCE, "..", "shared", "corpus"))
DEMO = os.path.join(SOURCE, "demo", "mailbox.mbox")
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
ISO8601 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def have_corpus():
    return os.path.isdir(os.path.join(CORPUS, "enron"))


class CliTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mailark-e2e-")
        self.data = os.path.join(self.tmp, "data")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run_cli(self, *args, expect=0, env=None):
        p = subprocess.run([BIN, "--data", self.data, *args], capture_output=True, timeout=600, env=env)
        if expect is not None:
            self.assertEqual(p.returncode, expect, f"mailark {' '.join(args)}\nstdout: {p.stdout[-2000:]!r}\n"
                                                   f"stderr: {p.stderr[-2000:]!r}")
        return p

    def json_cli(self, *args, expect=0, env=None):
        p = self.run_cli(*args, "--json", expect=expect, env=env)
        return json.loads(p.stdout)

    def write(self, name, data):
        path = os.path.join(self.tmp, "in", name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_a_password_from_stdin_is_one_bounded_line(self):
        def add(name, **how):
            return subprocess.run([BIN, "--data", self.data, "user", "add", name, "--password-stdin"],
                                  capture_output=True, timeout=60, **how)
        # Standard input without end (and without a line break): refused once past the bound, not read
        # until memory runs out.
        with open("/dev/zero", "rb") as zero:
            p = add("zed@example.com", stdin=zero)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(b"longer than a password may be (1024 bytes)", p.stderr)
        p = add("long@example.com", input=b"x" * 1025 + b"\n")
        self.assertEqual(p.returncode, 2, p.stderr)
        # At the bound, with a CRLF end: taken; what follows the line is not read.
        p = add("max@example.com", input=b"y" * 1024 + b"\r\nthe rest is not read\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        p = add("empty@example.com", input=b"\n")
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(b"no password on standard input", p.stderr)
        listed = self.run_cli("user", "list", "--json").stdout.decode()
        self.assertIn("max@example.com", listed)
        for refused in ("zed@", "long@", "empty@"):
            self.assertNotIn(refused, listed)

    # --- import / search contract -------------------------------------------------------------

    def test_demo_mailbox_import_reports_every_count(self):
        out = self.json_cli("import", DEMO)
        for key in ("messages", "imported", "duplicates", "infected", "unscanned", "malformed", "errors"):
            self.assertIsInstance(out[key], int, key)
        self.assertEqual(out["messages"], 10)
        self.assertEqual(out["imported"], 10)
        self.assertEqual(out["infected"], 1)
        self.assertEqual(out["errors"], 0)
        self.assertEqual(out["error_files"], [])

    def test_search_json_contract_and_newest_first(self):
        self.run_cli("import", DEMO)
        res = self.json_cli("search", "rotterdam")
        self.assertEqual(res["total"], 3)
        dates = [r["date"] for r in res["results"]]
        self.assertEqual(dates, sorted(dates, reverse=True))
        for r in res["results"]:
            self.assertEqual(set(r) >= {"id", "message_id", "date", "from", "subject", "verdict", "size"}, True)
            self.assertRegex(r["date"], ISO8601)
            self.assertIn(r["verdict"], ("clean", "infected", "unscanned"))
            self.assertGreater(r["size"], 0)
        subjects = {r["subject"] for r in res["results"]}
        self.assertEqual(subjects, {"Quarterly shipping forecast", "Re: Quarterly shipping forecast",
                                    "Crane maintenance window"})

    def test_search_fields_limit_and_offset(self):
        self.run_cli("import", DEMO)
        self.assertEqual(self.json_cli("search", "from:chloe.dubois@northwind.example")["total"], 2)
        self.assertEqual(self.json_cli("search", "subject:lisbonne")["total"], 1)
        self.assertEqual(self.json_cli("search", "attachment:pdf")["total"], 1)
        self.assertEqual(self.json_cli("search", "has:attachment")["total"], 3)
        self.assertEqual(self.json_cli("search", '"customs paperwork"')["total"], 2)
        self.assertEqual(self.json_cli("search", "verdict:infected")["results"][0]["subject"],
                         "Invoice INV-2291 overdue")
        page = self.json_cli("search", "date:2026", "--limit", "3", "--offset", "2")
        self.assertEqual(page["total"], 10)
        self.assertEqual(len(page["results"]), 3)
        everything = self.json_cli("search", "date:2026", "--limit", "10")
        self.assertEqual([r["id"] for r in page["results"]], [r["id"] for r in everything["results"][2:5]])

    def test_query_error_is_an_error_not_zero_results(self):
        self.run_cli("import", DEMO)
        p = self.run_cli("search", "rotterdam AND", expect=2)
        self.assertIn(b"query", p.stderr)
        p = self.run_cli("search", "date:someday", expect=2)
        self.assertIn(b"date", p.stderr)

    def test_reimport_adds_nothing(self):
        self.run_cli("import", DEMO)
        again = self.json_cli("import", DEMO)
        self.assertEqual(again["imported"], 0)
        self.assertEqual(again["duplicates"], 10)
        self.assertEqual(self.json_cli("stats")["messages"], 10)

    # --- show / verify / stats / reindex ------------------------------------------------------

    def test_show_raw_returns_the_exact_original_bytes(self):
        original = (b"From: Zoe <zoe@example.com>\r\nTo: yann@example.com\r\nSubject: exact bytes\r\n"
                    b"Message-ID: <exact@example.com>\r\n\r\ntrailing spaces   \r\n\x01\x7f raw 8-bit \xe9\r\n")
        path = self.write("exact.eml", original)
        self.run_cli("import", path)
        hit = self.json_cli("search", "id:exact@example.com")["results"][0]
        raw = self.run_cli("show", str(hit["id"]), "--raw").stdout
        self.assertEqual(raw, original)
        shown = self.json_cli("show", str(hit["id"]))
        self.assertEqual(shown["subject"], "exact bytes")
        self.assertEqual(shown["verdict"], "clean")
        self.assertEqual(shown["envelope"]["source"], path)

    def test_hostile_header_text_is_safe_for_the_terminal(self):
        """tools/terminal_safe.h: a subject, a sender's name and a body that carry terminal control
        sequences (retitle, clear, blink, colours, a CR that rewrites the line, the 8-bit CSI) are shown
        in caret notation by `search` and `show`, never written raw to the terminal; the JSON keeps
        them (escaped) and `show --raw` the exact bytes."""
        def b64(text):
            return "=?UTF-8?B?" + base64.b64encode(text.encode()).decode() + "?="

        subject = "evil \x1b]0;pwned\x07 \x1b[2J\x1b[31mRED\rfake \u009b31m"
        original = (f"From: {b64('Bad' + chr(27) + '[5mGuy')} <bad@example.com>\r\nTo: ana@example.com\r\n"
                    f"Subject: {b64(subject)}\r\nMessage-ID: <hostile@example.com>\r\n\r\n"
                    "body \x1b[31m red\r\n").encode()
        path = self.write("hostile.eml", original)
        self.run_cli("import", path)
        hit = self.json_cli("search", "id:hostile@example.com")["results"][0]
        self.assertIn("\x1b]0;pwned\x07", hit["subject"], "the JSON keeps the text as it is, escaped")
        listed = self.run_cli("search", "id:hostile@example.com").stdout
        shown = self.run_cli("show", str(hit["id"])).stdout
        for out in (listed, shown):
            self.assertNotRegex(out, rb"[\x00-\x08\x0b-\x1f\x7f]|\xc2[\x80-\x9f]", out)
            self.assertIn(b"evil ^[]0;pwned^G ^[[2J^[[31mRED", out)
            self.assertIn(b"Bad^[[5mGuy", out)
        self.assertEqual(self.run_cli("show", str(hit["id"]), "--raw").stdout, original)
        # A subject of 6,000 characters takes one short line of the listing (tools/terminal_safe.h
        # fit_column); `show` and the JSON have all of it.
        words = [f"word{i:04d}" for i in range(600)]
        long_subject = " ".join(words)
        folded = "\r\n ".join(" ".join(words[i:i + 7]) for i in range(0, len(words), 7))
        self.run_cli("import", self.write("long.eml", (f"From: a@example.com\r\nSubject: {folded}\r\n"
                                                      "Message-ID: <long@example.com>\r\n\r\nbody\r\n").encode()))
        line = self.run_cli("search", "id:long@example.com").stdout.split(b"\n")[0]
        self.assertLess(len(line), 200, line)
        self.assertTrue(line.endswith(b"~"), line)
        self.assertIn(long_subject[:100].encode(), line)
        self.assertEqual(len(self.json_cli("search", "id:long@example.com")["results"][0]["subject"]), len(long_subject))

    def loaded_libraries(self, *args, binary=None):
        """The shared objects the dynamic loader opened while `mailark ARGS` ran (LD_DEBUG=files)."""
        env = dict(os.environ, LD_DEBUG="files")
        p = subprocess.run([binary or BIN, "--data", self.data, *args], capture_output=True, timeout=600, env=env)
        opened = set(re.findall(r"file=(\S+) \[0\];  needed by|file=(\S+) \[0\];  dynamically loaded",
                                p.stderr.decode(errors="replace")))
        return p, {os.path.basename(a or b) for a, b in opened}

    @staticmethod
    def sanitizer_build():
        return b"libasan" in subprocess.run(["readelf", "-d", shutil.which(BIN) or BIN], capture_output=True).stdout

    def skip_unless_gmime_is_a_module(self):
        # Sanitizer builds link GMime into mailark (CMakeLists.txt); any other build that does fails.
        if self.sanitizer_build():
            self.skipTest("a sanitizer build: GMime is linked into mailark there (CMakeLists.txt)")

    def test_commands_that_parse_no_mail_do_not_load_gmime(self):
        self.skip_unless_gmime_is_a_module()
        # GMime brings GLib, GIO, gpgme and more (engine/message_loader.cc): a search of words, fields
        # or dates, stats and verify's record checks start without them; a command that parses mail
        # loads mailark-mime.so, and GMime with it, and gives the same answers.
        self.run_cli("import", DEMO)
        for args in (["search", "rotterdam"], ["search", "from:ana AND date:2026-03-01..2026-03-31"],
                     ["search", "rotterdam", "--json"], ["stats"], ["segments"]):
            p, libs = self.loaded_libraries(*args)
            self.assertEqual(p.returncode, 0, p.stderr[-2000:])
            self.assertIn("libxapian.so.30", libs, "LD_DEBUG output not understood")
            self.assertFalse({lib for lib in libs if "gmime" in lib or "glib" in lib or lib == "mailark-mime.so"},
                             " ".join(args))
        # A phrase of the texts reads the texts the index kept for mail that needs MIME decoding (the
        # demo's are multipart, base64: docs/FORMAT.md "Kept texts"), so it loads no GMime either.
        p, libs = self.loaded_libraries("search", '"shipping forecast"', "--json")
        self.assertEqual(p.returncode, 0, p.stderr[-2000:])
        self.assertEqual(json.loads(p.stdout)["total"], 2)
        self.assertFalse({lib for lib in libs if "gmime" in lib or lib == "mailark-mime.so"}, "a text phrase")
        # A header phrase reads the header section from the archive, and `show` parses the message.
        first = self.json_cli("search", "rotterdam")["results"][0]["id"]
        for args in (["show", str(first)], ["search", 'from:"ana ortega"', "--json"]):
            p, libs = self.loaded_libraries(*args)
            self.assertEqual(p.returncode, 0, p.stderr[-2000:])
            self.assertIn("mailark-mime.so", libs, " ".join(args))
            self.assertIn("libgmime-3.0.so.0", libs, " ".join(args))
        self.assertEqual(json.loads(p.stdout)["total"], 2)
        shown = self.run_cli("show", str(first)).stdout.decode()
        self.assertIn("Subject:", shown)
        self.assertIn("Structure:", shown)

    def test_import_takes_the_servers_limits_with_config(self):
        # tools/cmd_import.cc --config: the [limits] of the server's configuration file bound what an
        # import takes in as they bound the server (message size, scan limits, disk reserve); without
        # it, the defaults. Before, an import knew only the defaults: a message the server would refuse
        # was archived, and one its scan limits make unscannable was recorded clean.
        box = os.path.join(self.tmp, "box")
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(box, sub))

        def put(name, msg):
            with open(os.path.join(box, "cur", name), "wb") as f:
                f.write(msg.as_bytes())

        small = email.mime.text.MIMEText("a short note\n")
        small["Subject"], small["Message-ID"] = "small", "<small@x>"
        put("1.small:2,S", small)
        big = email.mime.text.MIMEText(("all work and no play " * 16 + "\n") * 1000)  # about 340 KB
        big["Subject"], big["Message-ID"] = "big", "<big@x>"
        put("2.big:2,S", big)
        att = email.mime.multipart.MIMEMultipart()
        att["Subject"], att["Message-ID"] = "attachment", "<attachment@x>"
        att.attach(email.mime.text.MIMEText("see the file\n"))
        part = email.mime.application.MIMEApplication(b"c" * 35000, Name="big.bin")
        part["Content-Disposition"] = 'attachment; filename="big.bin"'
        att.attach(part)
        put("3.attachment:2,S", att)

        def config(text):
            path = os.path.join(self.tmp, f"config-{len(text)}.toml")
            with open(path, "w") as f:
                f.write(text)
            return path

        def run(data, *args):
            p = subprocess.run([BIN, "--data", os.path.join(self.tmp, data), "import", "--json", *args, box],
                               capture_output=True, timeout=300)
            return p.returncode, json.loads(p.stdout or b"{}"), p.stderr.decode()

        limits = config("[limits]\nmessage_bytes = 200000\nscan_file_bytes = 30000\n")
        rc, out, err = run("with-config", "--config", limits)
        self.assertEqual(rc, 0, err)
        self.assertEqual((out["messages"], out["imported"], out["unscannable"], out["errors"]), (2, 2, 1, 1), out)
        self.assertIn("over the limit of 200000", out["error_files"][0]["reason"])
        self.assertTrue(out["error_files"][0]["path"].endswith("2.big:2,S"), out)
        rc, out, err = run("without")
        self.assertEqual(rc, 0, err)
        self.assertEqual((out["imported"], out["unscannable"], out["errors"]), (3, 0, 0), out)

        # The disk reserve: the configuration's (here more than any disk has) unless --disk-reserve says.
        reserve = config("[limits]\ndisk_reserve_bytes = 1125899906842624\n")
        rc, out, err = run("reserve", "--no-scan", "--config", reserve)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("limits.disk_reserve_bytes of " + reserve, err)
        self.assertEqual(out["imported"], 0, out)
        rc, out, err = run("reserve", "--no-scan", "--config", reserve, "--disk-reserve", "0")
        self.assertEqual(rc, 0, err)
        self.assertEqual(out["imported"], 3, out)

        rc, out, err = run("missing", "--config", os.path.join(self.tmp, "no-such.toml"))
        self.assertEqual(rc, 3, err)  # kExitNotFound
        self.assertIn("no-such.toml", err)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "missing", "archive")), "nothing opened")

    def test_an_import_places_mail_for_an_idn_user_in_either_spelling(self):
        # A user of an internationalised domain (ana@bücher.example) gets imported mail addressed to
        # the A-label spelling (ana@xn--bcher-kva.example, as senders without SMTPUTF8 write it), as the
        # server places it: the import's follower knows both spellings (tools/cli.h address_other_form).
        # And a user added in A-labels (ben@xn--bcher-kva.example) gets mail written in UTF-8.
        for user in ("ana@b\u00fccher.example", "ben@xn--bcher-kva.example"):
            p = subprocess.run([BIN, "--data", self.data, "user", "add", user, "--password-stdin"],
                               input=b"pw\n", capture_output=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
        box = self.write("idn.mbox", b"".join(
            b"From x@y.org Sat Dec  5 10:00:00 2026\nFrom: x@y.org\nTo: " + to + b"\nSubject: s" + str(i).encode() +
            b"\nMessage-ID: <idn" + str(i).encode() + b"@x>\n\nhi\n\n"
            for i, to in enumerate([b"ana@xn--bcher-kva.example", "ana@b\u00fccher.example".encode(),
                                    "ben@b\u00fccher.example".encode(), b"ben@xn--bcher-kva.example",
                                    b"cy@xn--bcher-kva.example"])))
        out = self.json_cli("import", box)
        self.assertEqual(out["imported"], 5)
        self.assertEqual(out["placed_in_folders"], 4, "both spellings of ana's and ben's addresses; not cy's")
        # A user added in A-labels after the mail came (the archive's mail placed by `user add`; GMime
        # reads header addresses in UTF-8, so it is the A-label spelling that needs the other form).
        p = subprocess.run([BIN, "--data", self.data, "user", "add", "cy@xn--bcher-kva.example", "--password-stdin"],
                           input=b"pw\n", capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"cy@xn--bcher-kva.example: 1 archived message in their folders", p.stdout)

    def test_user_place_places_what_is_missing_once(self):
        # Mail archived while a user was disabled is not in their folders when they are enabled again
        # (nor what an earlier release's rules did not place); `user place` puts it there, once.
        def user(*args, stdin=b""):
            p = subprocess.run([BIN, "--data", self.data, "user", *args], input=stdin, capture_output=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            return p.stdout.decode()
        user("add", "dee@northwind.example", "--password-stdin", stdin=b"pw\n")
        user("disable", "dee@northwind.example")
        box = self.write("dee.mbox", b"".join(
            b"From x@y.org Sat Dec  5 10:00:00 2026\nFrom: x@y.org\nTo: dee@northwind.example\nSubject: s" +
            str(i).encode() + b"\nMessage-ID: <dee" + str(i).encode() + b"@x>\n\nhi\n\n" for i in range(2)))
        out = self.json_cli("import", box)
        self.assertEqual(out["imported"], 2)
        self.assertEqual(out["placed_in_folders"], 0, "a disabled user receives nothing")
        self.assertIn("user place dee@northwind.example", user("enable", "dee@northwind.example"))
        self.assertIn("dee@northwind.example: 2 messages placed, 2 archived messages in their folders",
                      user("place", "dee@northwind.example"))
        self.assertIn("dee@northwind.example: 0 messages placed, 2 archived messages in their folders",
                      user("place", "dee@northwind.example"))
        p = subprocess.run([BIN, "--data", self.data, "user", "place", "nobody@northwind.example"],
                           capture_output=True, timeout=60)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(b"nobody@northwind.example", p.stderr)

    def test_import_and_reindex_run_in_the_server_binary(self):
        # The pipeline commands hand over to mailark-server, linked with TCMalloc (tools/cli.h,
        # run_in_server); the short ones stay in `mailark` with glibc's allocator.
        sanitized = self.sanitizer_build()
        for args in (["import", DEMO, "--json"], ["reindex", "--json"]):
            p, libs = self.loaded_libraries(*args)
            self.assertEqual(p.returncode, 0, p.stderr[-2000:])
            self.assertRegex(p.stderr, rb"needed by \S*/mailark-server \[0\]", " ".join(args))
            if not sanitized:  # the sanitizers bring their own allocator (CMakeLists.txt)
                self.assertIn("libtcmalloc_minimal.so.4", libs, " ".join(args))
            out = json.loads(p.stdout)
            self.assertEqual(out["imported"] if args[0] == "import" else out["indexed"], 10, p.stdout)
        for args in (["search", "rotterdam", "--json"], ["stats"]):
            p, libs = self.loaded_libraries(*args)
            self.assertEqual(p.returncode, 0, p.stderr[-2000:])
            self.assertNotIn(b"mailark-server", p.stderr, " ".join(args))
            self.assertNotIn("libtcmalloc_minimal.so.4", libs, " ".join(args))
        self.assertEqual(self.json_cli("search", "rotterdam")["total"], 3)

    def test_short_commands_do_not_load_libcrypto(self):
        # SHA-256, Ed25519 and base64 come from Nettle (common/sha256.cc): loading libcrypto cost
        # every command about 130 page faults. A phrase search and `show` read messages (SHA-256 of
        # each), `verify` checks the chain, `checkpoint` signs (Ed25519); only a password (scrypt)
        # loads libcrypto, when it is hashed.
        self.run_cli("import", DEMO)
        for args in (["search", '"rotterdam"', "--json"], ["show", "1"], ["stats"], ["verify", "--json"],
                     ["checkpoint"]):
            p, libs = self.loaded_libraries(*args)
            self.assertEqual(p.returncode, 0, p.stderr[-2000:])
            self.assertNotIn("libcrypto.so.3", libs, " ".join(args))
            self.assertIn("libnettle.so.8", libs, " ".join(args))
        self.assertEqual(self.json_cli("search", '"rotterdam"')["total"], 3)
        self.assertTrue(self.json_cli("verify")["intact"])

    def test_a_missing_mime_module_is_a_clear_error_and_other_commands_still_work(self):
        self.skip_unless_gmime_is_a_module()
        self.run_cli("import", DEMO)
        alone = os.path.join(self.tmp, "bin")
        os.makedirs(alone)
        shutil.copy(BIN, os.path.join(alone, "mailark"))
        lone = os.path.join(alone, "mailark")
        p = subprocess.run([lone, "--data", self.data, "search", "rotterdam", "--json"], capture_output=True,
                           timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["total"], 3)
        p = subprocess.run([lone, "--data", self.data, "show", "1"], capture_output=True, timeout=120)
        self.assertEqual(p.returncode, 70, p.stderr)
        self.assertIn(b"cannot load", p.stderr)
        self.assertIn(b"mailark-mime.so", p.stderr)

    def test_show_unknown_id_is_not_found(self):
        self.run_cli("import", DEMO)
        self.run_cli("show", "999", expect=3)

    def test_verify_reports_a_byte_changed_on_disk_with_its_record(self):
        self.run_cli("import", DEMO)
        self.assertTrue(self.json_cli("verify")["intact"])
        # The records are in the (first and only) segment's store.
        db = os.path.join(self.data, "archive", "segment-1.mdb")
        with open(db, "r+b") as f:
            data = f.read()
            marker = b"mailbox.mbox#7"
            at = data.find(marker)
            self.assertGreater(at, 0)
            self.assertEqual(data.find(marker, at + 1), -1, "the marker is unique")
            f.seek(at)
            f.write(b"M")
        out = self.json_cli("verify", expect=1)
        self.assertFalse(out["intact"])
        self.assertEqual(out["first_bad_record"], 7)
        self.assertIn("record 7", out["problem"])
        human = self.run_cli("verify", expect=1)
        self.assertIn(b"record 7", human.stdout)

    def test_verify_index_names_a_damaged_shard(self):
        # libxapian 1.4.22's check frees each table's checker through its base class (its bug, not
        # mailark's): the sanitizer suite's ASan would report it, so it is told not to for these
        # commands only (tests/index_test.cc says more).
        env = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":new_delete_type_mismatch=0")
        self.run_cli("import", DEMO)
        out = self.json_cli("verify", "--index", env=env)
        self.assertTrue(out["intact"])
        check = out["index_check"]
        self.assertTrue(check["intact"])
        self.assertEqual(check["damaged"], 0)
        names = [s["shard"] for s in check["shards"]]
        self.assertEqual(names, ["shard0", "shard1"])
        self.assertTrue(all(s["intact"] and s["bytes"] > 0 for s in check["shards"]))
        self.assertNotIn("index_check", self.json_cli("verify"), "only when asked: it reads the whole index")
        # A block of one shard's postings changed on disk (a bad sector, a torn write).
        postlist = os.path.join(self.data, "index", "shard1", "postlist.glass")
        size = os.path.getsize(postlist)
        self.assertGreaterEqual(size, 8192)
        with open(postlist, "r+b") as f:
            f.seek(size - 8192 + 20)
            f.write(b"\xa5" * 64)
        out = self.json_cli("verify", "--index", expect=1, env=env)
        self.assertTrue(out["intact"], "the archive is intact: only the index is damaged")
        self.assertFalse(out["index_check"]["intact"])
        self.assertIsNone(out["index_watermark"], "a damaged index is not read (Xapian may crash on its blocks)")
        self.assertEqual([s["shard"] for s in out["index_check"]["shards"] if not s["intact"]], ["shard1"])
        human = self.run_cli("verify", "--index", expect=1, env=env)
        self.assertIn(b"INDEX DAMAGED: shard1 (segment 1)", human.stdout)
        self.assertIn(b"mailark reindex", human.stdout)
        self.assertIn(b"archive intact", human.stdout)
        self.assertIn(b"index: not read", human.stdout)
        # The archive is the truth: the index rebuilt from it checks intact and finds every message.
        self.run_cli("reindex")
        self.assertTrue(self.json_cli("verify", "--index", env=env)["index_check"]["intact"])
        self.assertEqual(self.json_cli("search", "date:2026", "--limit", "100")["total"], 10)

    def test_stats_keys(self):
        self.run_cli("import", DEMO)
        s = self.json_cli("stats")
        for key in ("messages", "raw_bytes", "archive_bytes", "index_bytes", "index_watermark"):
            self.assertIsInstance(s[key], int, key)
        self.assertEqual(s["messages"], 10)
        self.assertEqual(s["index_watermark"], 10)
        self.assertEqual(s["infected"], 1)
        with open(DEMO, "rb") as f:
            lines = f.readlines()
        # The archive holds each message without its mbox "From " line and the blank line after it.
        self.assertEqual(s["raw_bytes"], os.path.getsize(DEMO) - sum(len(x) for x in lines if x.startswith(b"From ")) - 10)

    def test_reindex_rebuilds_from_the_archive(self):
        self.run_cli("import", DEMO)
        before = self.json_cli("search", "date:2026", "--limit", "100")
        shutil.rmtree(os.path.join(self.data, "index"))
        out = self.json_cli("reindex")
        self.assertEqual(out["indexed"], 10)
        after = self.json_cli("search", "date:2026", "--limit", "100")
        self.assertEqual(before["results"], after["results"])

    def test_new_dictionary_keeps_older_messages_readable(self):
        self.run_cli("import", DEMO)
        before = self.run_cli("show", "1", "--raw").stdout
        out = self.json_cli("train-dictionary", "--samples", "10", "--bytes", "2048")
        self.assertEqual(out["dictionary"], out["previous"] + 1)
        self.assertEqual(self.json_cli("stats")["dictionary"], out["dictionary"])
        fresh = self.write("after.eml", b"From: a@example.com\nSubject: after training\n\nnew mail\n")
        self.json_cli("import", fresh)
        self.assertEqual(self.run_cli("show", "1", "--raw").stdout, before)
        self.assertTrue(self.json_cli("verify")["intact"])
        self.assertEqual(self.json_cli("search", "subject:training")["total"], 1)

    def test_missing_data_folder_is_reported(self):
        p = self.run_cli("search", "anything", expect=3)
        self.assertIn(b"no archive", p.stderr)

    def test_missing_import_path_is_not_found(self):
        self.run_cli("import", os.path.join(self.tmp, "nope"), expect=3)

    # --- bad input ----------------------------------------------------------------------------

    def test_bad_inputs_are_accounted_for_and_the_import_goes_on(self):
        self.write("empty.eml", b"")
        self.write("picture.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
        self.write("notes.txt", b"just some notes, not a message\n")
        self.write("good.eml", b"From: a@example.com\nSubject: good one\n\nfine\n")
        self.write("truncated.eml", b"From: a@example.com\nSubject: cut\nMIME-Version: 1.0\n"
                                    b"Content-Type: multipart/mixed; boundary=XX\n\n--XX\nContent-Type: text/plain\n\n"
                                    b"partial text\n--XX\nContent-Type: application/zip\nContent-Transfer-Encoding: base64\n\nUEsD")
        self.write("longline.eml", b"From: a@example.com\nSubject: one long line\n\n" + b"y" * (10 << 20) + b"\n")
        self.write("nul.eml", b"From: a@example.com\nSubject: nul \x00 byte\n\nbody \x00\xff\xfe\n")
        self.write("dupid-1.eml", b"From: a@example.com\nMessage-ID: <same@x>\nSubject: first\n\none\n")
        self.write("dupid-2.eml", b"From: a@example.com\nMessage-ID: <same@x>\nSubject: second\n\ntwo\n")
        out = self.json_cli("import", os.path.join(self.tmp, "in"))
        self.assertEqual(out["errors"], 3)
        reasons = {os.path.basename(e["path"]): e["reason"] for e in out["error_files"]}
        self.assertEqual(reasons["empty.eml"], "empty file")
        self.assertIn("not an email message", reasons["picture.png"])
        self.assertIn("not an email message", reasons["notes.txt"])
        self.assertEqual(out["imported"], 6)
        self.assertEqual(self.json_cli("search", "id:same@x")["total"], 2)
        self.assertEqual(self.json_cli("search", "partial")["total"], 1)
        self.assertTrue(self.json_cli("verify")["intact"])

    # --- virus scanning through the whole pipeline --------------------------------------------

    def _message(self, subject, attachment=None, name=None, inner=None):
        m = email.mime.multipart.MIMEMultipart()
        m["From"] = "mallory@example.net"
        m["To"] = "victim@example.com"
        m["Subject"] = subject
        m["Message-ID"] = f"<{subject.replace(' ', '-')}@example.net>"
        m.attach(email.mime.text.MIMEText("please open the attachment"))
        if attachment is not None:
            part = email.mime.application.MIMEApplication(attachment, Name=name)
            part["Content-Disposition"] = f'attachment; filename="{name}"'
            m.attach(part)
        if inner is not None:
            m.attach(email.mime.message.MIMEMessage(inner))
        return m

    def test_eicar_in_base64_zip_and_forwarded_message_is_infected_and_kept(self):
        z = io.BytesIO()
        with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("invoice.com", EICAR)
        self.write("b64.eml", self._message("eicar base64", EICAR, "eicar.com").as_bytes())
        self.write("zip.eml", self._message("eicar zipped", z.getvalue(), "invoice.zip").as_bytes())
        self.write("fwd.eml", self._message("eicar forwarded",
                                            inner=self._message("inner", EICAR, "eicar.com")).as_bytes())
        self.write("clean.eml", self._message("harmless", b"just a text file", "readme.txt").as_bytes())
        out = self.json_cli("import", os.path.join(self.tmp, "in"))
        self.assertEqual(out["imported"], 4)
        self.assertEqual(out["infected"], 3)
        infected = self.json_cli("search", "verdict:infected")
        self.assertEqual({r["subject"] for r in infected["results"]},
                         {"eicar base64", "eicar zipped", "eicar forwarded"})
        shown = self.json_cli("show", str(infected["results"][0]["id"]))
        self.assertTrue(shown["quarantined"])
        self.assertTrue(any("EICAR" in s for s in shown["signatures"]), shown["signatures"])
        self.assertEqual(self.json_cli("search", "verdict:clean")["results"][0]["subject"], "harmless")

    # --- real mail ----------------------------------------------------------------------------

    def test_enron_maildir_import_accounts_for_every_file(self):
        if not have_corpus():
            self.skipTest("corpus not found (set MAILARK_CORPUS)")
        inbox = os.path.join(CORPUS, "enron", "maildir", "skilling-j")
        files = sum(len(f) for _, _, f in os.walk(inbox))
        out = self.json_cli("import", inbox)
        self.assertEqual(out["messages"], files)
        self.assertEqual(out["imported"] + out["duplicates"], files)
        self.assertEqual(out["errors"], 0)
        # Facts looked up by hand: skilling-j/inbox/1019, 1137 and 1153 have "golf" in the subject.
        golf = self.json_cli("search", "subject:golf", "--limit", "50")
        self.assertEqual(golf["total"], 3)
        sources = set()
        for r in golf["results"]:
            sources.add(os.path.relpath(self.json_cli("show", str(r["id"]))["envelope"]["source"], inbox))
        self.assertEqual(sources, {"inbox/1019", "inbox/1137", "inbox/1153"})

    def test_mbox_corpus_counts_match_the_from_lines(self):
        if not have_corpus():
            self.skipTest("corpus not found (set MAILARK_CORPUS)")
        root = os.path.join(CORPUS, "mbox")
        expected = 0  # "From " lines at the start of the file or after a blank line, counted here
        for dirpath, _, names in os.walk(root):
            for n in names:
                with open(os.path.join(dirpath, n), "rb") as f:
                    data = f.read()
                if data.startswith(b"\xef\xbb\xbf"):
                    data = data[3:]  # a byte order mark before the first "From " line
                lines = data.split(b"\n")
                if not lines[0].startswith(b"From "):
                    expected += 1  # not an mbox: one message file (or one reported error)
                    continue
                expected += sum(1 for i, line in enumerate(lines)
                                if line.startswith(b"From ") and (i == 0 or lines[i - 1] in (b"", b"\r")))
        out = self.json_cli("import", root)
        self.assertEqual(out["errors"], 0, out["error_files"])
        self.assertEqual(out["messages"], expected)
        self.assertEqual(out["imported"] + out["duplicates"], out["messages"])

if __name__ == "__main__":
    unittest.main()
