"""IMAP straight from the archive, with real clients: Python's imaplib, curl, mbsync (isync), and raw
sockets for what a client library hides (IDLE, hostile input). A real `mailark serve` with an
inbound SMTP listener, an IMAP listener with STARTTLS and one with implicit TLS; users added with the
`mailark user` CLI; mail sent through SMTP; logins only over TLS (plaintext_login_networks = [])."""
import base64
import imaplib
import os
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
import unicodedata
import unittest

from harness import BIN, EICAR, Server, free_port, insecure_tls


def message(subject, to="alice@example.com", body="hello from the internet\r\n", frm="sender@internet.example"):
    return (f"From: Sender <{frm}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@internet.example>\r\n"
            f"Date: Sun, 29 Nov 2026 10:00:00 +0000\r\n\r\n{body}").encode()


class ImapTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mx, cls.imap_port, cls.imaps_port = free_port(), free_port(), free_port()
        cls.sub_port, cls.subs_port = free_port(), free_port()
        cls.server = Server(f"""
[server]
hostname = "mx.test.example"
[inbound]
domains = ["example.com"]
verify_recipients = "none"
[auth]
plaintext_login_networks = []
[delivery]
# Nothing listens at either: mail waits in the queue, where the tests look at it.
smarthost = ["127.0.0.1:{free_port()}"]
primary = ["127.0.0.1:{free_port()}"]
retry_schedule = [1]
[[listener]]
name = "mx"
role = "inbound"
port = {cls.mx}
tls = "starttls"
[[listener]]
name = "imap"
role = "imap"
port = {cls.imap_port}
tls = "starttls"
[[listener]]
name = "imaps"
role = "imap"
port = {cls.imaps_port}
tls = "implicit"
[[listener]]
name = "submission"
role = "submission"
port = {cls.sub_port}
tls = "starttls"
[[listener]]
name = "submissions"
role = "submission"
port = {cls.subs_port}
tls = "implicit"
""", wait_port=cls.imaps_port)
        cls.data = cls.server.data
        for user, pw in (("alice@example.com", "alice-pw"), ("bob@example.com", "bob-pw"),
                         ("carol@example.com", "carol-pw")):
            p = subprocess.run([BIN, "--data", cls.data, "user", "add", user, "--password-stdin"],
                               input=pw.encode() + b"\n", capture_output=True, timeout=60)
            assert p.returncode == 0, p.stderr
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.cleanup()

    # ---- helpers ----

    def send(self, rcpts, data):
        with smtplib.SMTP("127.0.0.1", self.mx, timeout=30) as s:
            s.ehlo("client.test.example")
            s.sendmail("sender@internet.example", rcpts, data)

    def login(self, user="alice@example.com", pw="alice-pw", implicit=True):
        if implicit:
            m = imaplib.IMAP4_SSL("127.0.0.1", self.imaps_port, ssl_context=insecure_tls(), timeout=30)
        else:
            m = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=30)
            m.starttls(ssl_context=insecure_tls())
        m.login(user, pw)
        return m

    def wait_count(self, m, folder, n, timeout=15):
        deadline = time.time() + timeout
        while True:
            typ, data = m.select(folder)
            self.assertEqual(typ, "OK", data)
            if int(data[0]) >= n or time.time() > deadline:
                return int(data[0])
            time.sleep(0.2)

    def archive_bytes(self, query):
        res = self.server.wait_for(query)
        self.assertEqual(res["total"], 1, query)
        ident = res["results"][0]["id"]
        return subprocess.run([BIN, "--data", self.data, "show", str(ident), "--raw"], capture_output=True,
                              timeout=60).stdout

    def uid_of(self, m, subject, timeout=15):
        """The UID of the one message with this subject in the selected folder; waits (bounded) for
        the follower to place mail that SMTP just accepted."""
        deadline = time.time() + timeout
        while True:
            m.noop()
            typ, data = m.uid("SEARCH", None, "SUBJECT", f'"{subject}"')
            self.assertEqual(typ, "OK")
            uids = data[0].split()
            if uids or time.time() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(len(uids), 1, (subject, data))
        return uids[0].decode()

    # ---- tests ----

    def test_commands_sent_in_plaintext_behind_starttls_are_discarded(self):
        """api/imap/server.cc: nothing a client sent in plaintext after STARTTLS counts as a command
        once TLS is up (RFC 9051 11.1; the class of CVE-2011-0411): a man in the middle who appends
        commands to the client's STARTTLS must not have them run inside the client's TLS session."""
        raw = socket.create_connection(("127.0.0.1", self.imap_port), timeout=30)
        try:
            self.assertTrue(raw.recv(4096).startswith(b"* OK"))
            # One write: STARTTLS, then what an attacker appended in plaintext.
            raw.sendall(b"a STARTTLS\r\nb LOGIN alice@example.com alice-pw\r\nc SELECT INBOX\r\n")
            got = b""
            while b"\r\n" not in got:
                chunk = raw.recv(1)  # one byte at a time: nothing past the tagged OK is read here
                self.assertTrue(chunk, got)
                got += chunk
            self.assertTrue(got.startswith(b"a OK"), got)
            tls = insecure_tls().wrap_socket(raw, server_hostname="mx.test.example")
            tls.sendall(b"d CAPABILITY\r\n")
            answer = b""
            while b"d OK" not in answer and b"d BAD" not in answer:
                chunk = tls.recv(4096)
                self.assertTrue(chunk, answer)
                answer += chunk
            self.assertNotIn(b"b OK", answer)
            self.assertNotIn(b"c OK", answer)
            self.assertIn(b"* CAPABILITY", answer)
            self.assertNotIn(b"STARTTLS", answer, "TLS is up: not offered again")
            tls.sendall(b"e SELECT INBOX\r\n")
            answer = b""
            while b"e " not in answer:
                chunk = tls.recv(4096)
                self.assertTrue(chunk, answer)
                answer += chunk
            self.assertIn(b"e BAD", answer, "not logged in: the injected LOGIN never ran")
            tls.close()
        finally:
            raw.close()

    def test_mail_arrives_in_every_recipients_inbox_byte_identical(self):
        # alice in To:, bob only in the envelope (Bcc): both get it; carol does not.
        self.send(["alice@example.com", "bob@example.com"], message("arrival check"))
        raw = self.archive_bytes("subject:arrival")
        for user, pw in (("alice@example.com", "alice-pw"), ("bob@example.com", "bob-pw")):
            m = self.login(user, pw)
            self.assertGreaterEqual(self.wait_count(m, "INBOX", 1), 1)
            uid = self.uid_of(m, "arrival check")
            typ, data = m.uid("FETCH", uid, "(BODY.PEEK[] RFC822.SIZE FLAGS)")
            self.assertEqual(typ, "OK")
            self.assertEqual(data[0][1], raw)
            rest = data[0][0] + b"".join(x for x in data[1:] if isinstance(x, bytes))
            self.assertIn(f"RFC822.SIZE {len(raw)}".encode(), rest)
            self.assertRegex(rest, rb"FLAGS \((\\Recent)?\)")  # PEEK leaves it unseen (rev1 clients see \Recent)
            m.logout()
        c = self.login("carol@example.com", "carol-pw")
        self.assertEqual(c.select("INBOX")[0], "OK")
        typ, data = c.uid("SEARCH", None, "SUBJECT", '"arrival check"')
        self.assertEqual(data, [b""])
        c.logout()

    def test_users_never_reach_each_others_mail(self):
        self.send(["bob@example.com"], message("for bob only", to="bob@example.com"))
        b = self.login("bob@example.com", "bob-pw")
        self.wait_count(b, "INBOX", 1)
        uid = self.uid_of(b, "for bob only")
        # The Date header's day (SENT*), alone and beside a text key that reads the same message.
        for criteria, found in ((("SENTON", "29-Nov-2026"), True), (("SENTBEFORE", "29-Nov-2026"), False),
                                (("SENTSINCE", "30-Nov-2026"), False), (("SENTSINCE", "29-Nov-2026"), True),
                                (("SUBJECT", '"for bob only"', "SENTON", "29-Nov-2026"), True),
                                (("SUBJECT", '"for bob only"', "SENTBEFORE", "29-Nov-2026"), False)):
            typ, data = b.uid("SEARCH", None, *criteria)
            self.assertEqual(typ, "OK", criteria)
            self.assertEqual(str(uid).encode() in data[0].split(), found, (criteria, data))
        b.logout()
        a = self.login()
        typ, data = a.select("INBOX")
        # By UID and sequence ranges: only alice's own messages, never bob's.
        typ, data = a.uid("FETCH", "1:*", "(BODY.PEEK[HEADER.FIELDS (Subject)])")
        self.assertNotIn(b"for bob only", b"".join(x[1] if isinstance(x, tuple) else x for x in data if x))
        typ, data = a.uid("SEARCH", None, "SUBJECT", '"for bob only"')
        self.assertEqual(data, [b""])
        typ, data = a.uid("SEARCH", None, "TEXT", "bob")
        for uid in data[0].split():
            typ, d = a.uid("FETCH", uid, "(BODY.PEEK[HEADER.FIELDS (To)])")
            self.assertNotIn(b"bob@example.com", d[0][1])
        # Path tricks and other users' names are folders alice does not have.
        for name in ('"../bob@example.com/INBOX"', '"bob@example.com/INBOX"', '"INBOX/../../bob"', '"/INBOX"',
                     '"INBOX/."', '"*"', '"%"'):
            typ, data = a.select(name)
            self.assertEqual(typ, "NO", name)
            typ, data = a.status(name, "(MESSAGES)")
            self.assertEqual(typ, "NO", name)
        typ, data = a.list()
        self.assertFalse([x for x in data if b"bob" in x], data)
        a.select("INBOX")
        typ, data = a.copy("1:*", '"../bob@example.com/INBOX"')
        self.assertEqual(typ, "NO")
        # A sequence number past the end is refused, not mapped to anybody's message.
        n = int(a.select("INBOX")[1][0])
        with self.assertRaises(imaplib.IMAP4.error) as e:  # imaplib raises on a BAD answer
            a.fetch(str(n + 5), "(FLAGS)")
        self.assertIn("beyond the last message", str(e.exception))
        a.logout()

    def test_idle_sees_new_mail_at_once(self):
        sock = insecure_tls().wrap_socket(socket.create_connection(("127.0.0.1", self.imaps_port), timeout=20))
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"a LOGIN carol@example.com carol-pw\r\n")
        while not f.readline().startswith(b"a "):
            pass
        sock.sendall(b"b SELECT INBOX\r\n")
        while not f.readline().startswith(b"b "):
            pass
        sock.sendall(b"c IDLE\r\n")
        self.assertTrue(f.readline().startswith(b"+"))
        sent = time.time()
        self.send(["carol@example.com"], message("idle wake up", to="carol@example.com"))
        line = f.readline()
        self.assertRegex(line, rb"^\* \d+ EXISTS\r\n$")
        self.assertLess(time.time() - sent, 10)
        sock.sendall(b"DONE\r\n")
        while True:
            line = f.readline()
            if line.startswith(b"c "):
                break
        self.assertTrue(line.startswith(b"c OK"), line)
        sock.sendall(b"d LOGOUT\r\n")
        sock.close()

    def test_append_goes_through_the_pipeline(self):
        a = self.login()
        msg = message("appended draft", to="someone@internet.example", frm="alice@example.com")
        typ, data = a.append("Drafts", "(\\Draft \\Seen)", imaplib.Time2Internaldate(1767225600), msg)
        self.assertEqual(typ, "OK", data)
        self.assertIn(b"APPENDUID", data[0])
        a.select("Drafts")
        uid = data[0].split()[2].rstrip(b"]").decode()
        typ, data = a.uid("FETCH", uid, "(FLAGS INTERNALDATE BODY.PEEK[])")
        self.assertIn(b"\\Draft", data[0][0])
        self.assertIn(b"1-Jan-2026", data[0][0])
        self.assertEqual(data[0][1], msg)
        # Archived and indexed like any other message.
        self.assertEqual(self.server.wait_for("subject:appended")["total"], 1)
        # A virus is refused (and kept, quarantined, in the archive).
        bad = message("appended virus", body=EICAR + "\r\n", frm="alice@example.com")
        typ, data = a.append("INBOX", None, None, bad)
        self.assertEqual(typ, "NO")
        self.assertIn(b"infected", data[0])
        # No such folder: TRYCREATE.
        typ, data = a.append("Nowhere", None, None, msg)
        self.assertEqual(typ, "NO")
        self.assertIn(b"TRYCREATE", data[0])
        a.logout()

    def test_search_sets_case_and_unicode_form_aside(self):
        """A name typed on a Mac arrives decomposed (NFD: "e" and a combining accent), Japanese mail
        writes Latin letters full-width: IMAP SEARCH (as Dovecot's i;unicode-casemap) and the archive's
        search find them typed the usual way, and upper-case letters beyond ASCII match lower-case ones
        (common/unicode_form.h), and so do letters typed without their accents; a Thai word is found
        inside a run of letters (indexer/word_breaks.h)."""
        nfd = unicodedata.normalize("NFD", "Résumé")
        subject = "=?UTF-8?B?" + base64.b64encode(f"CV {nfd} form".encode()).decode() + "?="
        frm = "=?UTF-8?B?" + base64.b64encode(unicodedata.normalize("NFD", "José Müller").encode()).decode() + "?="
        msg = (f"From: {frm} <jose@internet.example>\r\nTo: alice@example.com\r\nSubject: {subject}\r\n"
               "Message-ID: <forms@internet.example>\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\n"
               "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
               "Price \uff30\uff23\uff11\uff12\uff13 model, see my " + nfd + " attached\r\n"
               "ผมกินน้ำทุกวันและทำงานที่กรุงเทพ\r\n").encode()
        a = self.login()
        typ, data = a.append("INBOX", None, None, msg)
        self.assertEqual(typ, "OK", data)
        self.assertEqual(self.server.wait_for('subject:"cv résumé form"')["total"], 1)
        for typed in ("résumé", "RÉSUMÉ", nfd):
            self.assertEqual(self.server.search(typed)["total"], 1, typed)
        self.assertEqual(self.server.search("pc123")["total"], 1)
        self.assertEqual(self.server.search("from:MÜLLER")["total"], 1)
        self.assertEqual(self.server.search("resume")["total"], 1, "typed without its accents")
        self.assertEqual(self.server.search("from:muller")["total"], 1)
        self.assertEqual(self.server.search("ทำงาน")["total"], 1, "a Thai word inside a run of letters")
        a.select("INBOX")
        uid = data[0].split()[2].rstrip(b"]")

        def search(*criteria, literal):
            a.literal = literal.encode()
            typ, found = a.uid("SEARCH", "CHARSET", "UTF-8", *criteria)
            self.assertEqual(typ, "OK", found)
            return found[0].split()

        self.assertEqual(search("SUBJECT", literal="résumé"), [uid], "composed key, decomposed subject")
        self.assertEqual(search("SUBJECT", literal="RÉSUMÉ"), [uid], "and upper case")
        self.assertEqual(search("FROM", literal="MÜLLER"), [uid])
        self.assertEqual(search("BODY", literal="PC123"), [uid], "full-width letters in the body")
        self.assertEqual(search("TEXT", literal="my résumé attached"), [uid])
        self.assertEqual(search("SUBJECT", literal="resume"), [uid], "accents set aside, as the index sets them")
        self.assertEqual(search("FROM", literal="muller"), [uid])
        self.assertEqual(search("SUBJECT", literal="resumes"), [])
        self.assertEqual(search("BODY", literal="ทำงาน"), [uid], "a Thai word inside a run")
        a.logout()

    def test_recent_never_counts_a_message_another_session_expunged(self):
        # api/imap/session.cc: a session's \Recent set loses the messages it reports expunged. Before,
        # it kept them: after another session expunged a recent message and a new one arrived, the
        # update said "* 1 EXISTS" then "* 2 RECENT" (imaptest's stress run under ASan: "seq too high
        # (2 > 1, state=APPEND): * 2 RECENT").
        a, b = self.login("carol@example.com", "carol-pw"), self.login("carol@example.com", "carol-pw")
        self.assertEqual(a.create("RecentCheck")[0], "OK")
        self.assertEqual(b.append("RecentCheck", None, None, message("recent one"))[0], "OK")
        self.assertEqual(self.wait_count(a, "RecentCheck", 1), 1)  # a's read-write SELECT: 1 is recent
        a.response("RECENT"), a.response("EXISTS")  # what the SELECT said
        self.assertEqual(b.select("RecentCheck")[0], "OK")
        self.assertEqual(b.store("1", "+FLAGS", "\\Deleted")[0], "OK")
        self.assertEqual(b.close()[0], "OK")  # expunges it, and b has nothing selected
        self.assertEqual(b.append("RecentCheck", None, None, message("recent two"))[0], "OK")
        exists, recent = [], []
        deadline = time.time() + 15
        while not exists and time.time() < deadline:
            self.assertEqual(a.noop()[0], "OK")
            exists += [int(v) for v in a.response("EXISTS")[1] if v is not None]
            recent += [int(v) for v in a.response("RECENT")[1] if v is not None]
            time.sleep(0.2)
        self.assertEqual(exists, [1], "the expunge, then the new message")
        self.assertEqual(recent, [1], "only the new message is recent")
        a.logout()
        b.logout()

    def test_flags_moves_and_expunge_are_views_and_the_archive_keeps_everything(self):
        self.send(["alice@example.com"], message("keep me archived"))
        raw = self.archive_bytes("subject:\"keep me archived\"")
        a = self.login()
        self.wait_count(a, "INBOX", 1)
        uid = self.uid_of(a, "keep me archived")
        self.assertEqual(a.uid("STORE", uid, "+FLAGS", "(\\Flagged $Work)")[0], "OK")
        a.logout()
        a = self.login(implicit=False)  # STARTTLS this time
        a.select("INBOX")
        typ, data = a.uid("FETCH", uid, "(FLAGS)")
        self.assertIn(b"\\Flagged", data[0])
        self.assertIn(b"$Work", data[0])
        self.assertEqual(a.create("Projects/Keep")[0], "OK")
        typ, data = a.uid("MOVE", uid, "Projects/Keep")
        self.assertEqual(typ, "OK", data)
        self.assertEqual(a.uid("SEARCH", None, "SUBJECT", '"keep me archived"')[1], [b""])
        a.select("Projects/Keep")
        typ, data = a.uid("SEARCH", None, "ALL")
        moved = data[0].split()[-1].decode()
        typ, data = a.uid("FETCH", moved, "(FLAGS BODY[])")  # not PEEK: sets \Seen
        self.assertEqual(data[0][1], raw)
        self.assertIn(b"\\Seen", data[0][0])
        self.assertIn(b"$Work", data[0][0])  # flags moved along
        a.uid("STORE", moved, "+FLAGS", "(\\Deleted)")
        self.assertEqual(a.expunge()[0], "OK")
        self.assertEqual(a.uid("SEARCH", None, "ALL")[1], [b""])
        a.logout()
        # The archive still has it, byte for byte.
        self.assertEqual(self.archive_bytes("subject:\"keep me archived\""), raw)

    def test_logins_need_tls_outside_the_trusted_networks(self):
        m = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=30)
        self.assertIn("LOGINDISABLED", m.capabilities)
        self.assertNotIn("AUTH=PLAIN", m.capabilities)
        with self.assertRaises(imaplib.IMAP4.error) as e:
            m.login("alice@example.com", "alice-pw")
        self.assertIn("PRIVACYREQUIRED", str(e.exception))
        m.starttls(ssl_context=insecure_tls())
        self.assertIn("AUTH=PLAIN", m.capabilities)
        m.authenticate("PLAIN", lambda _: b"\0alice@example.com\0alice-pw")
        m.logout()
        # Logging in as someone else through the authorisation identity is refused.
        m = imaplib.IMAP4_SSL("127.0.0.1", self.imaps_port, ssl_context=insecure_tls(), timeout=30)
        with self.assertRaises(imaplib.IMAP4.error):
            m.authenticate("PLAIN", lambda _: b"bob@example.com\0alice@example.com\0alice-pw")
        m.logout()

    def test_login_floods_are_throttled(self):
        # A user name nobody else uses in these tests, so the throttle touches only this test.
        p = subprocess.run([BIN, "--data", self.data, "user", "add", "dave@example.com", "--password-stdin"],
                           input=b"dave-pw\n", capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        answers = []
        for i in range(12):
            m = imaplib.IMAP4_SSL("127.0.0.1", self.imaps_port, ssl_context=insecure_tls(), timeout=30)
            try:
                m.login("dave@example.com", "wrong-%d" % i)
            except imaplib.IMAP4.error as e:
                answers.append(str(e))
            m.shutdown()
        self.assertIn("AUTHENTICATIONFAILED", answers[0])
        self.assertIn("UNAVAILABLE", answers[-1])
        m = imaplib.IMAP4_SSL("127.0.0.1", self.imaps_port, ssl_context=insecure_tls(), timeout=30)
        with self.assertRaises(imaplib.IMAP4.error) as e:
            m.login("dave@example.com", "dave-pw")  # even the right password, while throttled
        self.assertIn("UNAVAILABLE", str(e.exception))
        m.shutdown()

    def test_hostile_input_gets_clear_answers_and_loses_nothing(self):
        self.send(["alice@example.com"], message("still here after the storm"))
        a = self.login()
        self.wait_count(a, "INBOX", 1)
        self.uid_of(a, "still here after the storm")
        a.logout()
        sock = insecure_tls().wrap_socket(socket.create_connection(("127.0.0.1", self.imaps_port), timeout=20))
        f = sock.makefile("rb")
        f.readline()

        def cmd(line):
            sock.sendall(line)
            tag = line.split(b" ", 1)[0]
            out = []
            while True:
                l = f.readline()
                self.assertTrue(l, b"connection closed after " + line[:60])
                out.append(l)
                if l.startswith(tag + b" ") or l.startswith(b"+ "):
                    return out

        # Before login an APPEND's literal has the small limit: no "+", nothing held for the client.
        r = cmd(b"p APPEND INBOX {10000000}\r\n")[-1]
        self.assertTrue(r.startswith(b"p NO [TOOBIG]"), r)
        self.assertIn(b"65536", r)
        self.assertTrue(cmd(b"a LOGIN alice@example.com alice-pw\r\n")[-1].startswith(b"a OK"))
        self.assertTrue(cmd(b"b SELECT INBOX\r\n")[-1].startswith(b"b OK"))

        r = cmd(b"c APPEND INBOX {999999999999}\r\n")[-1]
        self.assertTrue(r.startswith(b"c NO [TOOBIG]"), r)
        r = cmd(b"d FETCH 1 (FLAGS\r\n")[-1]
        self.assertTrue(r.startswith(b"d BAD"), r)
        r = cmd(b"e UID FETCH 1:4294967295 (UID)\r\n")[-1]
        self.assertTrue(r.startswith(b"e OK"), r)
        r = cmd(b"f UID FETCH " + b",".join(str(i).encode() for i in range(1, 10003)) + b" (UID)\r\n")[-1]
        self.assertTrue(r.startswith(b"f BAD"), r)
        r = cmd(b"g CREATE \"a//b\"\r\n")[-1]
        self.assertTrue(r.startswith(b"g NO"), r)
        r = cmd(b"h SEARCH " + b"NOT " * 500 + b"SEEN\r\n")[-1]
        self.assertTrue(r.startswith(b"h BAD"), r)
        r = cmd(b"i FETCH 1 (BODY[1.2.3.4.5.6.7.8.9])\r\n")[-1]
        self.assertTrue(r.startswith(b"i OK"), r)
        r = cmd(b"j NOOP\r\n")[-1]
        self.assertTrue(r.startswith(b"j OK"), r)
        sock.sendall(b"k LOGOUT\r\n")
        sock.close()
        a = self.login()
        a.select("INBOX")
        self.uid_of(a, "still here after the storm")
        a.logout()

    def test_imported_mail_is_served_with_crlf_line_ends(self):
        """An mbox keeps its messages with LF line ends, and so does the archive (it keeps what came);
        IMAP sends every message with CRLF line ends (RFC 9051's message data is RFC 5322 text), as
        Dovecot does from an LF Maildir: BODY[], its sections and RFC822.SIZE all of that form, and
        SEARCH LARGER, SMALLER and STATUS SIZE count it too. BINARY (IMAP4rev2) gives a part with its
        transfer encoding undone, in a literal8 when it holds a NUL; an encoding no one knows fails
        the FETCH with UNKNOWN-CTE."""
        attachment = bytes(range(256)) * 3
        import base64
        b64 = base64.encodebytes(attachment).decode()
        msg = ("From: Dana <dana@old.example>\nTo: carol@example.com\nSubject: imported with lf ends\n"
               "Message-ID: <lf-ends@old.example>\nDate: Mon, 2 Mar 2026 10:00:00 +0000\nMIME-Version: 1.0\n"
               "Content-Type: multipart/mixed; boundary=\"sep\"\n\n"
               "--sep\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"
               "caf=C3=A9 au lait, a line that is long enough to be cut by a soft line brea=\nk here\n"
               "--sep\nContent-Type: application/octet-stream; name=\"bytes.bin\"\n"
               "Content-Transfer-Encoding: base64\n\n" + b64 +
               "--sep\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: x-unheard-of\n\n"
               "zzzz\n--sep--\n").encode()
        tmp = tempfile.mkdtemp(prefix="mailark-lf-")
        try:
            mbox = os.path.join(tmp, "old.mbox")
            with open(mbox, "wb") as fh:
                fh.write(b"From dana@old.example Mon Mar  2 10:00:00 2026\n" + msg + b"\n")
            p = subprocess.run([BIN, "--data", self.data, "import", "--owner", "carol@example.com", mbox],
                               capture_output=True, timeout=120)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        stored = self.archive_bytes('subject:"imported with lf ends"')
        self.assertNotIn(b"\r", stored)  # the archive keeps the LF form
        want = stored.replace(b"\n", b"\r\n")
        c = self.login("carol@example.com", "carol-pw")
        c.select("INBOX")
        uid = self.uid_of(c, "imported with lf ends")
        typ, data = c.uid("FETCH", uid, "(RFC822.SIZE BODY.PEEK[])")
        self.assertEqual(typ, "OK", data)
        self.assertEqual(data[0][1], want)
        self.assertIn(b"RFC822.SIZE %d " % len(want), data[0][0])
        for _ in range(2):  # counted from the message, then remembered: the same both times
            typ, data = c.uid("FETCH", uid, "(RFC822.SIZE)")
            self.assertIn(b"RFC822.SIZE %d)" % len(want), data[0])
        typ, data = c.uid("FETCH", uid, "(BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[1.MIME] BODY.PEEK[1])")
        self.assertEqual(data[0][1], b"Subject: imported with lf ends\r\n\r\n")
        self.assertEqual(data[1][1], b"Content-Type: text/plain; charset=utf-8\r\n"
                                     b"Content-Transfer-Encoding: quoted-printable\r\n\r\n")
        self.assertTrue(data[2][1].endswith(b"brea=\r\nk here"), data[2][1])
        for key, hit in (("LARGER %d" % (len(want) - 1), True), ("LARGER %d" % len(want), False),
                         ("SMALLER %d" % (len(want) + 1), True), ("SMALLER %d" % len(want), False)):
            typ, found = c.uid("SEARCH", None, "UID", uid, *key.split())
            self.assertEqual(uid.encode() in found[0].split(), hit, key)
        # BINARY: the parts decoded; the attachment's bytes exactly (a NUL among them: a literal8).
        typ, data = c.uid("FETCH", uid, "(BINARY.SIZE[2] BINARY.PEEK[2] BINARY.PEEK[1])")
        self.assertEqual(typ, "OK", data)
        self.assertIn(b"BINARY.SIZE[2] %d" % len(attachment), data[0][0])
        self.assertIn(b"~{%d}" % len(attachment), data[0][0])
        self.assertEqual(data[0][1], attachment)
        self.assertEqual(data[1][1], "café au lait, a line that is long enough to be cut by a soft line break here"
                         .encode())
        typ, data = c.uid("FETCH", uid, "(BINARY.PEEK[3])")
        self.assertEqual(typ, "NO", data)
        self.assertIn(b"UNKNOWN-CTE", data[0])
        with self.assertRaisesRegex(imaplib.IMAP4.error, "part numbers only"):
            c.uid("FETCH", uid, "(BINARY.PEEK[1.MIME])")
        # STATUS SIZE (IMAP4rev2): the folder's messages in the form IMAP sends them.
        sizes = c.fetch("1:*", "(RFC822.SIZE)")[1]
        total = sum(int(n) for x in sizes if isinstance(x, bytes) for n in re.findall(rb"RFC822\.SIZE (\d+)", x))
        self.assertGreaterEqual(total, len(want))
        typ, data = c.status("INBOX", "(SIZE)")
        self.assertIn(b"SIZE %d" % total, data[0])
        c.logout()
        # curl gets the same CRLF form.
        curl = subprocess.run(["curl", "-s", "-k", "--max-time", "30", "-u", "carol@example.com:carol-pw",
                               f"imaps://127.0.0.1:{self.imaps_port}/INBOX;UID={uid}"], capture_output=True, timeout=60)
        self.assertEqual(curl.returncode, 0, curl.stderr)
        self.assertEqual(curl.stdout, want)

    def test_a_nul_byte_goes_out_only_in_binary(self):
        """SMTP takes a message with a NUL byte in it (as Postfix does) and the archive keeps it; IMAP
        may send a NUL only in BINARY's literal8 (RFC 9051 4.3), so BODY[] and RFC822 send it as 0x80,
        as Dovecot does, with the size unchanged, and BINARY[1] gives the byte back."""
        self.send(["carol@example.com"], message("a nul inside", to="carol@example.com", body="before\0after\r\n"))
        stored = self.archive_bytes('subject:"a nul inside"')
        self.assertIn(b"before\0after", stored)
        c = self.login("carol@example.com", "carol-pw")
        self.wait_count(c, "INBOX", 1)
        uid = self.uid_of(c, "a nul inside")
        typ, data = c.uid("FETCH", uid, "(RFC822.SIZE BODY.PEEK[] BODY.PEEK[TEXT] BINARY.PEEK[1])")
        self.assertEqual(typ, "OK", data)
        self.assertEqual(data[0][1], stored.replace(b"\0", b"\x80"))
        self.assertIn(b"RFC822.SIZE %d " % len(stored), data[0][0])
        self.assertEqual(data[1][1], b"before\x80after\r\n")
        self.assertIn(b"~{", data[2][0])
        self.assertEqual(data[2][1], b"before\0after\r\n")
        c.logout()

    def test_curl_and_mbsync_pull_the_mailbox(self):
        self.send(["bob@example.com"], message("pulled by real clients", to="bob@example.com"))
        raw = self.archive_bytes("subject:\"pulled by real clients\"")
        b = self.login("bob@example.com", "bob-pw")
        self.wait_count(b, "INBOX", 1)
        uid = self.uid_of(b, "pulled by real clients")
        b.logout()
        curl = subprocess.run(["curl", "-s", "-k", "--max-time", "30", "-u", "bob@example.com:bob-pw",
                               f"imaps://127.0.0.1:{self.imaps_port}/INBOX;UID={uid}"], capture_output=True, timeout=60)
        self.assertEqual(curl.returncode, 0, curl.stderr)
        self.assertEqual(curl.stdout, raw)
        if not shutil.which("mbsync"):
            self.skipTest("mbsync (Debian's isync) is not installed; scripts/setup.sh installs it")
        tmp = tempfile.mkdtemp(prefix="mailark-mbsync-")
        os.makedirs(os.path.join(tmp, "mail"))
        try:
            cert = os.path.join(self.data, "tls", "cert.pem")
            rc = os.path.join(tmp, "mbsyncrc")
            with open(rc, "w") as fh:
                fh.write(f"""IMAPAccount bob
Host 127.0.0.1
Port {self.imaps_port}
User bob@example.com
Pass bob-pw
SSLType IMAPS
CertificateFile {cert}

IMAPStore remote
Account bob

MaildirStore local
Path {tmp}/mail/
Inbox {tmp}/mail/INBOX
SubFolders Verbatim

Channel pull
Far :remote:
Near :local:
Patterns *
Create Near
Sync Pull
SyncState *
""")
            p = subprocess.run(["mbsync", "-c", rc, "-a"], capture_output=True, timeout=120)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            got = []
            for d in ("new", "cur"):
                folder = os.path.join(tmp, "mail", "INBOX", d)
                for name in os.listdir(folder):
                    with open(os.path.join(folder, name), "rb") as fh:
                        got.append(fh.read())
            # mbsync writes Maildir files with Unix line ends and adds its own X-TUID tracking field;
            # every other byte is the archive's.
            def mbsync_form(b):
                return b"".join(l for l in b.replace(b"\r\n", b"\n").splitlines(keepends=True)
                                if not l.startswith(b"X-TUID: "))
            self.assertIn(mbsync_form(raw), [mbsync_form(g) for g in got])
            typ_count = len(got)
            b = self.login("bob@example.com", "bob-pw")
            self.assertEqual(typ_count, int(b.select("INBOX")[1][0]))
            b.logout()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class SubmissionTest(ImapTest):
    """Submission (RFC 6409) on the same server: only the class's own tests run here."""

    def submit(self, user, pw, mail_from, rcpts, data, implicit=False):
        if implicit:
            s = smtplib.SMTP_SSL("127.0.0.1", self.subs_port, context=insecure_tls(), timeout=30)
        else:
            s = smtplib.SMTP("127.0.0.1", self.sub_port, timeout=30)
            s.ehlo("laptop.example.com")
            s.starttls(context=insecure_tls())
        s.ehlo("laptop.example.com")
        s.login(user, pw)
        try:
            return s.sendmail(mail_from, rcpts, data)
        finally:
            s.quit()

    def test_submission_sends_queues_and_files_one_sent_copy(self):
        msg = message("submitted mixed", to="friend@internet.example, bob@example.com", frm="alice@example.com")
        self.assertEqual(self.submit("alice@example.com", "alice-pw", "alice@example.com",
                                     ["friend@internet.example", "bob@example.com"], msg), {})
        # The outside recipient is queued for the internet; bob reads it in mailark.
        res = self.server.wait_for("subject:\"submitted mixed\"", expected=2)
        self.assertEqual(res["total"], 2)  # one record per route, the bytes stored once
        queued = [e for e in self.server.cli("queue")["entries"] if e["route"] == "internet"]
        self.assertTrue(any(r["address"] == "friend@internet.example" for e in queued for r in e["recipients"]), queued)
        self.assertFalse(any(r["address"] == "bob@example.com" for e in queued for r in e["recipients"]), queued)
        b = self.login("bob@example.com", "bob-pw")
        b.select("INBOX")
        self.uid_of(b, "submitted mixed")
        b.logout()
        a = self.login()
        a.select("Sent")
        self.uid_of(a, "submitted mixed")  # exactly one Sent copy
        a.logout()
        # Implicit TLS (port 465 style) works the same; an internal-only message needs no queue. This
        # one, as a scanner or a script sends it, has no Date: and no Message-ID: the server adds both
        # (RFC 6409 8.3) to what it archives and delivers.
        msg2 = (b"From: alice@example.com\r\nTo: bob@example.com\r\nSubject: submitted inside\r\n\r\n"
                b"hello from the internet\r\n")
        self.assertEqual(self.submit("alice@example.com", "alice-pw", "alice@example.com", ["bob@example.com"], msg2,
                                     implicit=True), {})
        b = self.login("bob@example.com", "bob-pw")
        b.select("INBOX")
        uid = self.uid_of(b, "submitted inside")
        typ, data = b.uid("FETCH", uid, "(BODY.PEEK[TEXT])")
        self.assertEqual(data[0][1], b"hello from the internet\r\n")
        typ, data = b.uid("FETCH", uid, "(BODY.PEEK[HEADER.FIELDS (DATE MESSAGE-ID)])")
        self.assertRegex(data[0][1], rb"^Date: \w{3}, \d\d \w{3} 20\d\d \d\d:\d\d:\d\d \+0000\r\n"
                                          rb"Message-ID: <\d+\.[0-9a-f]{16}@mx\.test\.example>\r\n\r\n$")
        b.logout()

    def test_submission_during_a_continuity_event_holds_internal_mail_and_sends_the_rest(self):
        # The same path during an outage: internal recipients wait for the primary (held, never
        # tried while the event runs) and read the message in mailark at once; outside ones go out.
        p = subprocess.run([BIN, "--data", self.data, "continuity", "start", "--reason", "test"], capture_output=True,
                           timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        try:
            time.sleep(1.5)  # the server reads the state every second
            msg = message("sent in an outage", to="friend@internet.example, bob@example.com", frm="alice@example.com")
            self.submit("alice@example.com", "alice-pw", "alice@example.com",
                        ["friend@internet.example", "bob@example.com"], msg)
            self.server.wait_for('subject:"sent in an outage"', expected=2)
            b = self.login("bob@example.com", "bob-pw")
            b.select("INBOX")
            self.uid_of(b, "sent in an outage")
            b.logout()
            time.sleep(3)  # the internet entry has been tried (and deferred) by now; the primary one not
            entries = self.server.cli("queue")["entries"]
            mine = {e["route"]: e for e in entries
                    if any(r["address"] in ("friend@internet.example", "bob@example.com") for r in e["recipients"])
                    and e["id"] in {h["id"] for h in self.server.search('subject:"sent in an outage"')["results"]}}
            self.assertEqual(set(mine), {"internet", "primary"}, entries)
            self.assertEqual([r["address"] for r in mine["primary"]["recipients"]], ["bob@example.com"])
            self.assertEqual(mine["primary"]["recipients"][0]["attempts"], 0, mine["primary"])
            self.assertGreaterEqual(mine["internet"]["recipients"][0]["attempts"], 1, mine["internet"])
        finally:
            subprocess.run([BIN, "--data", self.data, "continuity", "stop"], capture_output=True, timeout=60)

    def test_submission_from_a_postfix_relaying_with_sasl(self):
        """A real Postfix (an application server's, say) relays through the submission listener as a
        user, over STARTTLS with SASL PLAIN, and names the sender in MAIL's AUTH parameter as Exim
        does once it has authenticated (here Postfix's smtp_send_dummy_mail_auth: AUTH=<>). RFC 4954
        5 has a server that offers AUTH take the parameter; mailark answered 555 before."""
        import postfix_instance
        if not postfix_instance.available():
            self.skipTest("needs root and the Debian package postfix")
        tmp = tempfile.mkdtemp(prefix="mailark-sasl-postfix-")
        os.chmod(tmp, 0o755)
        port = free_port()
        pf = postfix_instance.Postfix(os.path.join(tmp, "app"), port, f"""
mydestination =
relayhost = [127.0.0.1]:{self.sub_port}
smtp_tls_security_level = encrypt
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = static:alice@example.com:alice-pw
smtp_sasl_security_options = noanonymous
smtp_sasl_tls_security_options = noanonymous
smtp_send_dummy_mail_auth = yes
""")
        # The SASL client's plug-ins are not inside a chroot: Postfix's smtp client runs outside one.
        master = os.path.join(pf.conf, "master.cf")
        with open(master) as f:
            text = f.read()
        with open(master, "w") as f:
            f.write(re.sub(r"(?m)^smtp(\s+)unix(\s+)-(\s+)-(\s+)y", r"smtp\1unix\2-\3-\4n", text))
        pf.start()
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
                s.sendmail("alice@example.com", ["bob@example.com"],
                           message("relayed with sasl", to="bob@example.com", frm="alice@example.com"))
            deadline = time.time() + 60
            while "status=" not in pf.read_log() and time.time() < deadline:
                time.sleep(0.2)
            log = pf.read_log()
            self.assertIn("status=sent", log, log[-3000:])
            # No 555 reply (a MAIL parameter refused): the code, not any "555" (a process id can hold it)
            self.assertIsNone(re.search(r"(?<![\d.])555[ -]5\.", log), log[-3000:])
            res = self.server.wait_for('subject:"relayed with sasl"')
            self.assertEqual(res["total"], 1, res)
            b = self.login("bob@example.com", "bob-pw")
            b.select("INBOX")
            self.uid_of(b, "relayed with sasl")
            b.logout()
        finally:
            pf.stop()
            shutil.rmtree(tmp, ignore_errors=True)

    def test_submission_refuses_what_is_not_the_users(self):
        ok = message("not mine", to="friend@internet.example", frm="alice@example.com")
        # Another user's envelope sender: 553.
        with self.assertRaises(smtplib.SMTPSenderRefused) as e:
            self.submit("alice@example.com", "alice-pw", "bob@example.com", ["friend@internet.example"], ok)
        self.assertEqual(e.exception.smtp_code, 553)
        # Another user's From: header: 550 after DATA, nothing archived.
        forged = message("forged from", to="friend@internet.example", frm="bob@example.com")
        with self.assertRaises(smtplib.SMTPDataError) as e:
            self.submit("alice@example.com", "alice-pw", "alice@example.com", ["friend@internet.example"], forged)
        self.assertEqual(e.exception.smtp_code, 550)
        self.assertEqual(self.server.search("subject:forged")["total"], 0)
        # Wrong password: 535. No AUTH at all: 530. AUTH before STARTTLS: 538 (TLS needed here).
        with self.assertRaises(smtplib.SMTPAuthenticationError) as e:
            self.submit("alice@example.com", "nope", "alice@example.com", ["friend@internet.example"], ok)
        self.assertEqual(e.exception.smtp_code, 535)
        with smtplib.SMTP("127.0.0.1", self.sub_port, timeout=30) as s:
            s.ehlo("laptop.example.com")
            self.assertNotIn("auth", s.esmtp_features)
            code, _ = s.docmd("AUTH", "PLAIN AGFsaWNlQGV4YW1wbGUuY29tAGFsaWNlLXB3")
            self.assertEqual(code, 538)
            code, _ = s.docmd("MAIL", "FROM:<alice@example.com>")
            self.assertEqual(code, 530)
        # curl as a real SMTP client, AUTH over implicit TLS.
        with tempfile.NamedTemporaryFile("wb", suffix=".eml", delete=False) as fh:
            fh.write(message("sent with curl", to="friend@internet.example", frm="alice@example.com"))
        try:
            p = subprocess.run(["curl", "-s", "-k", "--max-time", "30", f"smtps://127.0.0.1:{self.subs_port}",
                                "-u", "alice@example.com:alice-pw", "--mail-from", "alice@example.com",
                                "--mail-rcpt", "friend@internet.example", "-T", fh.name], capture_output=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
        finally:
            os.unlink(fh.name)
        self.assertEqual(self.server.wait_for("subject:\"sent with curl\"")["total"], 1)


class NeomuttTest(SubmissionTest):
    """A terminal mail client, as a user runs it: neomutt in tmux reads bob's INBOX over IMAPS and
    replies through submission (SMTPS), driven by keystrokes."""

    def tmux(self, *args):
        return subprocess.run(["tmux", "-L", self.socket_name, *args], capture_output=True, timeout=30)

    def screen(self):
        return self.tmux("capture-pane", "-p", "-t", "nm").stdout.decode(errors="replace")

    def wait_screen(self, text, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            shown = self.screen()
            if text in shown:
                return shown
            time.sleep(0.3)
        self.fail(f"neomutt never showed {text!r}; the screen:\n" + self.screen())

    def test_neomutt_reads_and_replies(self):
        if not shutil.which("neomutt") or not shutil.which("tmux"):
            self.skipTest("neomutt or tmux is not installed; scripts/setup.sh installs them")
        self.send(["bob@example.com"], message("neomutt reads this", to="bob@example.com"))
        b = self.login("bob@example.com", "bob-pw")
        b.select("INBOX")
        self.uid_of(b, "neomutt reads this")
        b.logout()
        home = tempfile.mkdtemp(prefix="mailark-neomutt-")
        self.socket_name = "mailark-" + os.path.basename(home)
        try:
            cert = os.path.join(self.data, "tls", "cert.pem")
            rc = os.path.join(home, "muttrc")
            with open(rc, "w") as f:
                f.write(f"""set folder = "imaps://bob%40example.com@127.0.0.1:{self.imaps_port}/"
set spoolfile = "+INBOX"
set imap_pass = "bob-pw"
set smtp_url = "smtps://bob%40example.com@127.0.0.1:{self.subs_port}/"
set smtp_pass = "bob-pw"
set certificate_file = "{cert}"
set ssl_verify_host = no
set from = "bob@example.com"
set real_name = "Bob"
set use_from = yes
set editor = "true"
set fast_reply = yes
set include = yes
set edit_headers = no
set record = "+Sent"
set copy = yes
set postpone = no
set sort = date
set header_cache = ""
set message_cachedir = ""
set wait_key = no
set confirm_append = no
set abort_unmodified = no
""")
            env = dict(os.environ, HOME=home, TERM="xterm")
            subprocess.run(["tmux", "-L", self.socket_name, "new-session", "-d", "-s", "nm", "-x", "200", "-y", "50",
                            f"neomutt -n -F {rc}"], check=True, env=env, timeout=30)
            self.wait_screen("neomutt reads this")
            # Find it, open it, reply (the editor keeps the quoted text), send.
            self.tmux("send-keys", "-t", "nm", "/", "neomutt reads this", "Enter")
            time.sleep(0.5)
            self.tmux("send-keys", "-t", "nm", "Enter")
            self.wait_screen("hello from the internet")
            self.tmux("send-keys", "-t", "nm", "r")
            self.wait_screen("Re: neomutt reads this")
            self.tmux("send-keys", "-t", "nm", "y")
            # Sent, then filed by neomutt itself in Sent (its Fcc: an APPEND, as Thunderbird, Apple
            # Mail and Outlook do). The archive keeps both; Sent shows one copy, neomutt's own (the
            # one submission filed carries mailark's Received field and is replaced by it).
            res = self.server.wait_for('subject:"Re: neomutt reads this"', expected=2, timeout=30)
            self.assertEqual(res["total"], 2, self.screen())
            b = self.login("bob@example.com", "bob-pw")
            deadline = time.time() + 30
            while True:
                b.select("Sent", readonly=True)
                typ, data = b.uid("SEARCH", "SUBJECT", '"Re: neomutt reads this"')
                uids = data[0].split()
                heads = [b.uid("FETCH", u, "(BODY.PEEK[HEADER])")[1][0][1] for u in uids]
                if len(uids) == 1 and b"(mailark)" not in heads[0] or time.time() > deadline:
                    break
                time.sleep(0.3)
            self.assertEqual(len(uids), 1, heads)
            self.assertNotIn(b"(mailark)", heads[0], "the copy kept is neomutt's own")
            b.logout()
            self.tmux("send-keys", "-t", "nm", "q")
        finally:
            self.tmux("kill-server")
            shutil.rmtree(home, ignore_errors=True)


class ImapIndexSearchTest(unittest.TestCase):
    """A text SEARCH of a folder of more than 1,000 messages goes through the index, and reads the
    folder's messages past the index's watermark one by one; it asks the index to commit first only
    when more than 100 of them are (api/imap/session.h kAskAbove): a few new messages cost no commit
    (one writes tens of MB on a large live segment). The commits are counted by /metrics
    (mailark_index_commits_total); the server's timed commits are an hour apart here."""

    def test_a_few_messages_past_the_watermark_are_read_not_committed(self):
        mx, imap, web = free_port(), free_port(), free_port()
        srv = Server(f"""
[inbound]
domains = ["example.com"]
verify_recipients = "none"
[archive]
index_commit_interval_ms = 3600000
[web]
listen = "127.0.0.1:{web}"
[[listener]]
name = "mx"
role = "inbound"
port = {mx}
tls = "none"
[[listener]]
name = "imap"
role = "imap"
port = {imap}
tls = "none"
""", wait_port=imap)
        self.addCleanup(srv.cleanup)
        srv.add_user("dana@example.com", "dana-pw")
        srv.add_user("admin@example.com", "admin-pw", role="admin")
        token = srv.run("user", "token", "admin@example.com", "add", "metrics").stdout.decode().strip()
        srv.start()

        def gauge(name):
            text = subprocess.run(["curl", "-sf", "-H", "Authorization: Bearer " + token,
                                   f"http://127.0.0.1:{web}/metrics"], capture_output=True, check=True).stdout.decode()
            return [float(l.split()[1]) for l in text.splitlines() if l.startswith(name + " ")][0]

        sent = [0]

        def send(n, body):
            with smtplib.SMTP("127.0.0.1", mx, timeout=60) as s:
                for _ in range(n):
                    sent[0] += 1
                    s.sendmail("sender@internet.example", ["dana@example.com"],
                               message(f"note {sent[0]}", to="dana@example.com", body=body))
            # Placed in INBOX by the follower, and taken in by the index (committed or not).
            deadline = time.time() + 120
            while time.time() < deadline:
                m = imaplib.IMAP4("127.0.0.1", imap)
                m.login("dana@example.com", "dana-pw")
                exists = int(m.select("INBOX", readonly=True)[1][0])
                m.logout()
                if exists == sent[0] and gauge("mailark_index_lag_messages") == 0:
                    return
                time.sleep(0.2)
            self.fail(f"{sent[0]} messages not placed and taken in")

        def search(word):
            m = imaplib.IMAP4("127.0.0.1", imap)
            m.login("dana@example.com", "dana-pw")
            m.select("INBOX", readonly=True)
            typ, data = m.search(None, "TEXT", word)
            m.logout()
            self.assertEqual(typ, "OK", data)
            return [int(x) for x in data[0].split()]

        send(1050, "plain filler\r\n")
        srv.cli("stats")  # asks the server to commit all of it
        commits = gauge("mailark_index_commits_total")
        send(5, "a kumquat for you\r\n")
        self.assertEqual(gauge("mailark_index_commits_total"), commits, "nothing commits by itself here")
        self.assertEqual(search("kumquat"), list(range(1051, 1056)))
        self.assertEqual(search("filler"), list(range(1, 1051)))
        self.assertEqual(gauge("mailark_index_commits_total"), commits, "five messages past the watermark: read, not committed")
        send(120, "more kumquat\r\n")
        self.assertEqual(search("kumquat"), list(range(1051, 1176)))
        self.assertGreater(gauge("mailark_index_commits_total"), commits, "125 past the watermark: committed first")


class UploadRoomTest(unittest.TestCase):
    """api/imap/server.cc: a message's APPEND literal takes room among the messages being uploaded over
    all connections (limits.store_bytes); past it the APPEND gets NO [UNAVAILABLE] before the client
    sends anything, and gets room again once others finish. Before, one user's connections each held
    their whole literal several times over: 20 connections x 20 MiB made the server hold 621 MB
    and peak at 1,712 MB (bench/imap/held_append.py)."""

    def test_appends_over_many_connections_share_a_bounded_room(self):
        port = free_port()
        server = Server(f"""
[server]
hostname = "mx.test.example"
[inbound]
domains = ["example.com"]
[[listener]]
name = "mx"
role = "inbound"
address = "127.0.0.1"
port = {free_port()}
tls = "none"
[[listener]]
name = "imap"
role = "imap"
address = "127.0.0.1"
port = {port}
tls = "none"
[limits]
message_bytes = 4194304
""", wait_port=port)
        self.addCleanup(server.cleanup)
        server.add_user("alice@example.com", "alice-pw")
        server.start()
        # Room: four times (4 MiB + 64 KiB) = 17,039,360 bytes; five literals of 3 MiB fit, a sixth not.
        size = 3 << 20
        bodies = [f"Subject: upload {i}\r\nMessage-ID: <upload-{i}@x>\r\n\r\n".encode() +
                  (f"upload {i} ".encode() * 20 + b"\r\n") * (size // 200) for i in range(6)]
        bodies = [b + b"x" * (size - len(b)) for b in bodies]

        def connect():
            sk = socket.create_connection(("127.0.0.1", port), timeout=30)
            f = sk.makefile("rb")
            self.assertTrue(f.readline().startswith(b"* OK"))
            sk.sendall(b"a LOGIN alice@example.com alice-pw\r\n")
            while True:
                line = f.readline()
                if line.startswith(b"a "):
                    self.assertTrue(line.startswith(b"a OK"), line)
                    return sk, f

        def tagged(f, tag):
            while True:
                line = f.readline()
                if not line or line.startswith(tag + b" "):
                    return line

        conns = [connect() for _ in range(6)]
        for i, (sk, f) in enumerate(conns):  # one after the other: which takes the room is then known
            sk.sendall(b"b APPEND INBOX {" + str(size).encode() + b"}\r\n")
            if i < 5:
                self.assertTrue(f.readline().startswith(b"+"), i)
        refused = tagged(conns[5][1], b"b")
        self.assertTrue(refused.startswith(b"b NO [UNAVAILABLE]"), refused)
        self.assertIn("refused for now", server.server_log())
        # One finishes: room again for the sixth.
        conns[0][0].sendall(bodies[0] + b"\r\n")
        self.assertTrue(tagged(conns[0][1], b"b").startswith(b"b OK [APPENDUID"))
        conns[5][0].sendall(b"c APPEND INBOX {" + str(size).encode() + b"}\r\n")
        self.assertTrue(conns[5][1].readline().startswith(b"+"))
        conns[5][0].sendall(bodies[5] + b"\r\n")
        self.assertTrue(tagged(conns[5][1], b"c").startswith(b"c OK [APPENDUID"))
        for i in range(1, 5):
            conns[i][0].sendall(bodies[i] + b"\r\n")
            self.assertTrue(tagged(conns[i][1], b"b").startswith(b"b OK [APPENDUID"), i)
        for sk, f in conns:
            sk.close()
        for i in range(6):
            res = server.wait_for(f"id:upload-{i}@x")
            self.assertEqual(res["total"], 1, i)
            raw = server.run("show", str(res["results"][0]["id"]), "--raw").stdout
            self.assertEqual(raw, bodies[i], i)


def load_tests(loader, tests, pattern):
    # SubmissionTest and NeomuttTest inherit ImapTest's server set-up, not its tests.
    suite = unittest.TestSuite()
    suite.addTests(loader.loadTestsFromTestCase(ImapTest))
    suite.addTests(loader.loadTestsFromTestCase(UploadRoomTest))
    for cls, prefix in ((SubmissionTest, "test_submission"), (NeomuttTest, "test_neomutt")):
        for name in loader.getTestCaseNames(cls):
            if name.startswith(prefix):
                suite.addTest(cls(name))
    return suite


if __name__ == "__main__":
    unittest.main()
