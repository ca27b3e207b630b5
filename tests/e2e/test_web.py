"""The web portal's REST API with real HTTP clients: Python's http.client and curl, against a real
`mailark serve` (inbound SMTP listener, web listener, users made with the CLI, mail sent by SMTP).

What it shows: only /health, the login and the login page's static files answer without a session or
token (every path of the OpenAPI document is tried); CSRF and origin checks; API tokens (made by the
CLI and by the API; revoked ones refused); user A cannot reach B's messages by folder/UID, by
attachment URL, by raw or HTML URL, by flag or move, or by search; reading, attachments, sending with
attachments, reply and forward; folders and flags shared with IMAP; admin endpoints only for admins;
the panic button over the API; quarantine release; Prometheus metrics after real traffic; and the
listener's limits (rate, body size, connections per client)."""
import base64
import email
import http.client
import imaplib
import json
import os
import smtplib
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.parse

import tlog
from harness import BIN, EICAR, Server, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPENAPI = os.path.join(ROOT, "api", "web", "ui", "openapi.json")


class Client:
    """A browser-like client: keeps the session cookie and sends the CSRF token."""

    def __init__(self, port, token=None):
        self.port = port
        self.cookie = None
        self.csrf = None
        self.token = token

    def request(self, method, path, body=None, headers=None, raw=False):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        h = dict(headers or {})
        if self.cookie:
            h.setdefault("Cookie", self.cookie)
        if self.csrf and method not in ("GET", "HEAD"):
            h.setdefault("X-CSRF-Token", self.csrf)
        if self.token:
            h.setdefault("Authorization", "Bearer " + self.token)
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=h)
        res = conn.getresponse()
        payload = res.read()
        conn.close()
        if raw:
            return res.status, res, payload
        try:
            return res.status, json.loads(payload) if payload else None
        except ValueError:
            return res.status, payload

    def login(self, user, password):
        status, res, payload = self.request("POST", "/api/v1/login", {"user": user, "password": password}, raw=True)
        if status != 200:
            return status, json.loads(payload)
        cookie = res.getheader("Set-Cookie")
        self.set_cookie = cookie
        self.cookie = cookie.split(";")[0]
        body = json.loads(payload)
        self.csrf = body["csrf"]
        return status, body

    def get(self, path):
        return self.request("GET", path)

    def post(self, path, body=None):
        return self.request("POST", path, body if body is not None else {})


def message(subject, to, frm="sender@internet.example", body="hello\r\n", extra=""):
    return (f"From: Sender <{frm}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}.{time.time_ns()}@internet.example>\r\n"
            f"Date: Sun, 29 Nov 2026 10:00:00 +0000\r\n{extra}\r\n{body}").encode()


ATTACHMENT = bytes(range(256)) * 40


def with_attachment(subject, to):
    b64 = base64.encodebytes(ATTACHMENT).decode().replace("\n", "\r\n")
    return message(subject, to, extra="MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n",
                   body=("--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nthe report is attached\r\n"
                         "--XX\r\nContent-Type: application/octet-stream; name=\"report.bin\"\r\n"
                         "Content-Disposition: attachment; filename=\"report.bin\"\r\n"
                         f"Content-Transfer-Encoding: base64\r\n\r\n{b64}--XX--\r\n"))


class WebApiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.mx, cls.web, cls.imap = free_port(), free_port(), free_port()
        cls.server = Server(f"""
[server]
hostname = "mx.test.example"
[inbound]
domains = ["example.com"]
verify_recipients = "none"
unscannable = "quarantine"
infected = "quarantine"
[delivery]
smarthost = ["127.0.0.1:{free_port()}"]
primary = ["127.0.0.1:{free_port()}"]
retry_schedule = [60]
[web]
listen = "127.0.0.1:{cls.web}"
requests_per_second = 1000
[[listener]]
name = "mx"
role = "inbound"
port = {cls.mx}
tls = "none"
[[listener]]
name = "imap"
role = "imap"
port = {cls.imap}
tls = "none"
""", wait_port=cls.web)
        cls.data = cls.server.data
        cls.server.add_user("alice@example.com", "alice-pw-123", "admin", "Alice")
        cls.server.add_user("bob@example.com", "bob-pw-123", "user", "Bob")
        cls.server.add_user("carol@example.com", "carol-pw-123", "auditor", "Carol")
        cls.server.start()
        with smtplib.SMTP("127.0.0.1", cls.mx, timeout=30) as s:
            s.sendmail("sender@internet.example", ["alice@example.com"], message("alice private plans", "alice@example.com",
                                                                                 body="the zanzibar merger\r\n"))
            s.sendmail("sender@internet.example", ["alice@example.com"], with_attachment("alice report", "alice@example.com"))
            s.sendmail("sender@internet.example", ["bob@example.com"], message("bob lunch", "bob@example.com",
                                                                               body="noodles at noon\r\n"))
        cls.alice = Client(cls.web)
        assert cls.alice.login("alice@example.com", "alice-pw-123")[0] == 200
        cls.bob = Client(cls.web)
        assert cls.bob.login("bob@example.com", "bob-pw-123")[0] == 200
        # Wait until the follower placed the mail and the index has it.
        deadline = time.time() + 30
        while time.time() < deadline:
            if cls.alice.get("/api/v1/search?q=zanzibar")[1].get("total") == 1 and \
                    cls.bob.get("/api/v1/search?q=noodles")[1].get("total") == 1:
                break
            time.sleep(0.2)

    @classmethod
    def tearDownClass(cls):
        cls.server.cleanup()

    def folder(self, client, name):
        for f in client.get("/api/v1/folders")[1]["folders"]:
            if f["name"] == name:
                return f
        raise AssertionError("no folder " + name)

    def find(self, client, subject, folder="INBOX", timeout=20):
        fid = self.folder(client, folder)["id"]
        deadline = time.time() + timeout
        while True:
            msgs = client.get(f"/api/v1/folders/{fid}/messages")[1]["messages"]
            for m in msgs:
                if m["subject"] == subject:
                    return m
            if time.time() > deadline:
                raise AssertionError(f"{subject!r} not in {folder}: {[m['subject'] for m in msgs]}")
            time.sleep(0.2)

    # ---- who may ask ----

    def test_nothing_answers_without_credentials(self):
        anon = Client(self.web)
        with open(OPENAPI) as f:
            doc = json.load(f)
        m = self.find(self.alice, "alice report")
        tried = 0
        for path, ops in doc["paths"].items():
            concrete = (path.replace("{folder}", str(m["folder"])).replace("{uid}", str(m["uid"]))
                        .replace("{section}", "2").replace("{id}", str(m["id"])).replace("{index}", "0"))
            for method in ops:
                if method not in ("get", "post", "put", "patch", "delete"):
                    continue  # the path's own keys ("parameters"), not a method
                status, body = anon.request(method.upper(), concrete, {} if method != "get" else None)
                tried += 1
                if path in ("/health", "/api/v1/login"):
                    self.assertNotEqual(status, 401, path)
                else:
                    self.assertEqual(status, 401, f"{method} {concrete} answered {status} without credentials")
        self.assertGreater(tried, 25)
        # A forged cookie and a made-up token are no better.
        forged = Client(self.web)
        forged.cookie = "mailark_session=" + "A" * 43
        self.assertEqual(forged.get("/api/v1/folders")[0], 401)
        self.assertEqual(Client(self.web, token="mkt_" + "B" * 43).get("/api/v1/folders")[0], 401)
        # The login page itself is public (no data in it).
        status, res, page = anon.request("GET", "/", raw=True)
        self.assertEqual(status, 200)
        self.assertIn(b"app.js", page)
        self.assertIn("script-src 'self'", res.getheader("Content-Security-Policy"))
        self.assertEqual(res.getheader("X-Frame-Options"), "DENY")

    def test_login(self):
        c = Client(self.web)
        status, body = c.login("alice@example.com", "wrong")
        self.assertEqual(status, 401)
        status, body = c.login("ALICE@example.com", "alice-pw-123")
        self.assertEqual(status, 200, body)
        self.assertEqual(body["role"], "admin")
        cookie = c.set_cookie
        self.assertIn("HttpOnly", cookie)
        self.assertIn("SameSite=Strict", cookie)
        self.assertNotIn("Secure", cookie)  # plain HTTP here; Secure under TLS
        self.assertEqual(c.get("/api/v1/session")[1]["user"], "alice@example.com")
        self.assertEqual(c.post("/api/v1/logout")[0], 200)
        self.assertEqual(c.get("/api/v1/session")[0], 401)
        # A password change ends the user's sessions (a stolen cookie does not outlive the password).
        self.server.add_user("erin@example.com", "erin-pw-123")
        d = Client(self.web)
        self.assertEqual(d.login("erin@example.com", "erin-pw-123")[0], 200)
        p = subprocess.run([BIN, "--data", self.data, "user", "passwd", "erin@example.com", "--password-stdin"],
                           input=b"erin-pw-456\n", capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(d.get("/api/v1/session")[0], 401)
        self.assertEqual(d.login("erin@example.com", "erin-pw-456")[0], 200)
        self.assertEqual(d.get("/api/v1/session")[0], 200)
        # Credentials only as JSON: a cross-site form cannot log anyone in.
        anon = Client(self.web)
        status, _ = anon.request("POST", "/api/v1/login", b"user=alice%40example.com&password=alice-pw-123",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(status, 415)

    def test_a_hostile_login_name_cannot_forge_a_log_line(self):
        """tools/cmd_serve.cc SafeMessage: the server logs a failed login with the name tried; a name with
        a newline, a forged log line and terminal escapes is logged on one line, its controls shown as
        ^J, ^[ (the log's reader sees them, the terminal does not obey them)."""
        c = Client(self.web)
        name = "x\n2026-01-01T00:00:00+00:00 mailark[1]: web: [10.0.0.1] alice@example.com logged in\x1b]0;pwned\x07"
        self.assertEqual(c.login(name, "wrong")[0], 401)
        deadline = time.time() + 10
        while "login failed for x" not in self.server.server_log() and time.time() < deadline:
            time.sleep(0.1)
        log = self.server.server_log()
        self.assertIn("login failed for x^J2026-01-01T00:00:00+00:00 mailark[1]: web: [10.0.0.1] alice@example.com "
                      "logged in^[]0;pwned^G", log)
        self.assertFalse(any(line.startswith("2026-01-01T00:00:00") for line in log.splitlines()), "no forged line")
        self.assertNotIn("\x1b", log)

    def test_csrf(self):
        c = Client(self.web)
        c.login("bob@example.com", "bob-pw-123")
        token = c.csrf
        c.csrf = None
        self.assertEqual(c.post("/api/v1/folders", {"name": "NoToken"})[0], 403)
        c.csrf = "x" * len(token)
        self.assertEqual(c.post("/api/v1/folders", {"name": "WrongToken"})[0], 403)
        c.csrf = token
        status, _ = c.request("POST", "/api/v1/folders", {"name": "OtherOrigin"}, headers={"Origin": "https://evil.example"})
        self.assertEqual(status, 403)
        status, body = c.post("/api/v1/folders", {"name": "WithToken"})
        self.assertEqual(status, 201, body)
        names = [f["name"] for f in c.get("/api/v1/folders")[1]["folders"]]
        self.assertIn("WithToken", names)
        self.assertNotIn("NoToken", names)
        self.assertNotIn("OtherOrigin", names)

    def test_api_tokens(self):
        p = subprocess.run([BIN, "--data", self.data, "user", "token", "bob@example.com", "add", "backup"],
                           capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        token = p.stdout.decode().strip()
        self.assertTrue(token.startswith("mkt_"))
        # curl, as a script would: no cookie, no CSRF token.
        out = subprocess.run(["curl", "-sf", "-H", "Authorization: Bearer " + token,
                              f"http://127.0.0.1:{self.web}/api/v1/search?q=noodles"], capture_output=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(json.loads(out.stdout)["total"], 1)
        scripted = Client(self.web, token=token)
        self.assertEqual(scripted.post("/api/v1/folders", {"name": "ByScript"})[0], 201)
        # A token made through the API works too, and a revoked one stops at once.
        status, made = self.bob.post("/api/v1/tokens", {"label": "phone"})
        self.assertEqual(status, 201, made)
        second = Client(self.web, token=made["token"])
        self.assertEqual(second.get("/api/v1/folders")[0], 200)
        p = subprocess.run([BIN, "--data", self.data, "user", "token", "bob@example.com", "remove", "backup"],
                           capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(scripted.get("/api/v1/folders")[0], 401)
        self.assertEqual(second.get("/api/v1/folders")[0], 200)
        # A user's token reaches that user's mail only.
        self.assertEqual(second.get("/api/v1/search?q=zanzibar")[1]["total"], 0)

    # ---- isolation ----

    def test_isolation(self):
        m = self.find(self.alice, "alice report")
        base = f"/api/v1/messages/{m['folder']}/{m['uid']}"
        self.assertEqual(self.alice.get(base)[0], 200)
        for path in (base, base + "/html", base + "/raw", base + "/parts/2", base + "/parts/1"):
            status, _ = self.bob.get(path)
            self.assertEqual(status, 404, path)
        self.assertEqual(self.bob.post(base + "/flags", {"add": ["flagged"]})[0], 404)
        bob_inbox = self.folder(self.bob, "INBOX")["id"]
        self.assertEqual(self.bob.post(base + "/move", {"to": bob_inbox})[0], 404)
        self.assertEqual(self.bob.request("DELETE", base)[0], 404)
        self.assertEqual(self.bob.get(f"/api/v1/folders/{m['folder']}/messages")[0], 404)
        self.assertEqual(self.bob.request("DELETE", f"/api/v1/folders/{m['folder']}")[0], 404)
        # Search: the index holds everyone's mail; bob's results hold only his.
        self.assertEqual(self.bob.get("/api/v1/search?q=zanzibar")[1]["total"], 0)
        self.assertEqual(self.bob.get("/api/v1/search?q=subject:alice")[1]["total"], 0)
        everything = self.bob.get("/api/v1/search?q=")[1]
        self.assertTrue(all(x["folder"] != m["folder"] for x in everything["messages"]))
        self.assertEqual(self.alice.get("/api/v1/search?q=noodles")[1]["total"], 0)
        # Alice's message is untouched by bob's attempts.
        self.assertNotIn("flagged", self.alice.get(base + "?peek=1")[1]["flags"])
        # And bob is no admin.
        for path in ("/api/v1/admin/continuity", "/api/v1/admin/queue", "/api/v1/admin/users", "/metrics"):
            self.assertEqual(self.bob.get(path)[0], 403, path)
        self.assertEqual(self.bob.post("/api/v1/admin/continuity/start", {"reason": "bob"})[0], 403)

    # ---- reading ----

    def test_read_message_and_attachment(self):
        m = self.find(self.alice, "alice report")
        self.assertTrue(m["attachment"])
        base = f"/api/v1/messages/{m['folder']}/{m['uid']}"
        status, v = self.alice.get(base)
        self.assertEqual(status, 200, v)
        self.assertEqual(v["subject"], "alice report")
        self.assertEqual(v["text"].strip(), "the report is attached")
        self.assertEqual(v["from"][0]["address"], "sender@internet.example")
        self.assertIn("seen", v["flags"])
        (att,) = v["attachments"]
        self.assertEqual(att["filename"], "report.bin")
        status, res, data = self.alice.request("GET", base + "/parts/" + att["section"], raw=True)
        self.assertEqual(status, 200)
        self.assertEqual(data, ATTACHMENT)
        self.assertTrue(res.getheader("Content-Disposition").startswith("attachment;"))
        # curl downloads the same bytes with the session cookie.
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "file")
            p = subprocess.run(["curl", "-sf", "-o", out, "-b", self.alice.cookie,
                                f"http://127.0.0.1:{self.web}{base}/parts/{att['section']}"], capture_output=True, timeout=30)
            self.assertEqual(p.returncode, 0, p.stderr)
            with open(out, "rb") as f:
                self.assertEqual(f.read(), ATTACHMENT)
        # The original, as archived (mailark show prints the same bytes).
        status, _, raw = self.alice.request("GET", base + "/raw", raw=True)
        self.assertEqual(status, 200)
        shown = self.server.run("show", str(m["id"]), "--raw")
        self.assertEqual(shown.returncode, 0, shown.stderr)
        self.assertEqual(raw, shown.stdout)
        self.assertEqual(self.alice.get(base + "/parts/9")[0], 404)
        self.assertEqual(self.alice.get(base + "/parts/1.1.1.1")[0], 404)

    def test_folders_and_flags(self):
        with smtplib.SMTP("127.0.0.1", self.mx, timeout=30) as s:
            s.sendmail("sender@internet.example", ["alice@example.com"],
                       message("alice filing", "alice@example.com", body="the kilimanjaro file\r\n"))
        m = self.find(self.alice, "alice filing")
        base = f"/api/v1/messages/{m['folder']}/{m['uid']}"
        status, out = self.alice.post(base + "/flags", {"add": ["flagged", "$Important"], "remove": ["seen"]})
        self.assertEqual(status, 200, out)
        self.assertIn("flagged", out["flags"])
        self.assertIn("$Important", out["flags"])
        self.assertNotIn("seen", out["flags"])
        self.assertEqual(self.alice.post(base + "/flags", {"add": ["bad flag"]})[0], 400)
        # The same side table as IMAP: what the web set, IMAP sees, and back.
        im = imaplib.IMAP4("127.0.0.1", self.imap)
        im.login("alice@example.com", "alice-pw-123")
        im.select("INBOX")
        typ, data = im.uid("FETCH", str(m["uid"]), "(FLAGS)")
        flags = data[0].decode()
        self.assertIn("\\Flagged", flags)
        self.assertIn("$Important", flags)
        self.assertNotIn("\\Seen", flags)
        im.uid("STORE", str(m["uid"]), "+FLAGS", "(\\Answered)")
        im.logout()
        self.assertIn("answered", self.alice.get(base + "?peek=1")[1]["flags"])
        status, made = self.alice.post("/api/v1/folders", {"name": "Projects/Zanzibar"})
        self.assertEqual(status, 201, made)
        status, moved = self.alice.post(base + "/move", {"to": made["id"]})
        self.assertEqual(status, 200, moved)
        msgs = self.alice.get(f"/api/v1/folders/{made['id']}/messages")[1]["messages"]
        self.assertEqual([x["subject"] for x in msgs], ["alice filing"])
        self.assertIn("$Important", msgs[0]["flags"])
        # Delete: to Trash, and from Trash for good; the archive keeps it (search by id still finds it).
        moved_base = f"/api/v1/messages/{made['id']}/{moved['uid']}"
        status, out = self.alice.request("DELETE", moved_base)
        self.assertEqual(status, 200, out)
        trash = self.folder(self.alice, "Trash")["id"]
        self.assertEqual(out["moved_to"], trash)
        t = self.alice.get(f"/api/v1/folders/{trash}/messages")[1]["messages"][0]
        self.assertEqual(self.alice.request("DELETE", f"/api/v1/messages/{trash}/{t['uid']}")[1]["expunged"], t["uid"])
        self.assertEqual(self.alice.get(f"/api/v1/folders/{trash}/messages")[1]["total"], 0)
        self.assertEqual(self.server.wait_for("kilimanjaro")["total"], 1)
        self.assertEqual(self.alice.request("DELETE", f"/api/v1/folders/{self.folder(self.alice, 'INBOX')['id']}")[0], 400)

    def test_search_syntax_and_paging(self):
        status, r = self.alice.get("/api/v1/search?q=" + "subject:alice")
        self.assertEqual(status, 200, r)
        self.assertEqual((r["total"], r["total_exact"]), (2, True))
        r = self.alice.get("/api/v1/search?q=subject:alice&limit=1")[1]
        self.assertEqual((r["total"], len(r["messages"])), (2, 1))
        r2 = self.alice.get("/api/v1/search?q=subject:alice&limit=1&offset=1")[1]
        self.assertNotEqual(r["messages"][0]["uid"], r2["messages"][0]["uid"])
        self.assertEqual(self.alice.get("/api/v1/search?q=has:attachment")[1]["total"], 1)
        # Phrases are checked against the messages, not guessed from their words.
        q = urllib.parse.quote
        self.assertEqual(self.alice.get("/api/v1/search?q=" + q('"zanzibar merger"'))[1]["total"], 1)
        self.assertEqual(self.alice.get("/api/v1/search?q=" + q('"merger zanzibar"'))[1]["total"], 0)
        self.assertEqual(self.alice.get("/api/v1/search?q=" + urllib.parse.quote("date:2026-11-29..2026-11-29 subject:alice"))[1]["total"], 2)
        status, err = self.alice.get("/api/v1/search?q=" + "date:banana")
        self.assertEqual(status, 400)
        self.assertIn("error", err)

    def test_paging_parameters_are_checked(self):
        """api/web/portal.cc page_params: an offset or limit that is not a whole number (or a limit of 0,
        an offset past 2^30) is refused with 400, not read as the default; a limit past 200 is 200."""
        inbox = self.alice.get("/api/v1/folders")[1]["folders"][0]["id"]
        for path in ("/api/v1/search?q=subject:alice", f"/api/v1/folders/{inbox}/messages?x=1"):
            for bad in ("offset=abc", "offset=-1", "offset=999999999999999999999", "offset=1073741825", "limit=-5",
                        "limit=0", "limit=1.5", "limit=", "offset=1e3"):
                status, err = self.alice.get(f"{path}&{bad}")
                if bad == "limit=":  # present but empty: as absent
                    self.assertEqual(status, 200, (path, bad, err))
                    continue
                self.assertEqual(status, 400, (path, bad, err))
                self.assertIn("offset and limit are whole numbers", err["error"])
            status, r = self.alice.get(f"{path}&limit=100000")
            self.assertEqual(status, 200, r)
            status, r = self.alice.get(f"{path}&offset=1073741824")
            self.assertEqual((status, r["messages"]), (200, []))

    # ---- hostile bytes ----

    def test_a_message_of_invalid_utf8_is_shown_and_the_server_stays_up(self):
        """Mail is bytes: a subject, a Message-ID, an In-Reply-To, another header and a body that are not
        UTF-8 (raw Latin-1, a cut sequence, an overlong one, a surrogate's bytes) are shown with U+FFFD
        where a byte cannot be read, the raw message is the bytes received, IMAP serves it, and the
        server goes on. (JSON text of such bytes once threw on a pool thread, which ended the whole
        process, the MX with it: common/json_text.h, api/blocking.h.)"""
        raw = (b"From: Sender <s@internet.example>\r\nTo: carol@example.com\r\n"
               b"Subject: mojibake caf\xe9 \xff\xfe\r\n"
               b"Message-ID: <bad\xff\xfeid." + str(time.time_ns()).encode() + b"@internet.example>\r\n"
               b"In-Reply-To: <x\xc3(@y>\r\nX-Junk: \xc0\xaf\xed\xa0\x80 latin \xe9\r\n"
               b"Date: Sun, 29 Nov 2026 10:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
               b"quetzal body \xff\xfe caf\xe9\r\n")
        with smtplib.SMTP("127.0.0.1", self.mx, timeout=30) as s:
            s.sendmail("s@internet.example", ["carol@example.com"], raw)
        carol = Client(self.web)
        self.assertEqual(carol.login("carol@example.com", "carol-pw-123")[0], 200)
        fid = self.folder(carol, "INBOX")["id"]
        deadline = time.time() + 20
        while True:
            status, listed = carol.get(f"/api/v1/folders/{fid}/messages")
            self.assertEqual(status, 200, listed)
            found = [m for m in listed["messages"] if m["subject"].startswith("mojibake")]
            if found or time.time() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(len(found), 1, listed)
        base = f"/api/v1/messages/{fid}/{found[0]['uid']}"
        for _ in range(3):  # more than once: the server is still there to answer
            status, v = carol.get(base)
            self.assertEqual(status, 200, v)
            self.assertTrue(v["subject"].startswith("mojibake caf"), v["subject"])
            self.assertIn("\ufffd", v["message_id"])
            self.assertIn("\ufffd", v["in_reply_to"])
            self.assertIn("quetzal body", v["text"])
            self.assertIn("X-Junk", [h[0] for h in v["headers"]])
        status, _, back = carol.request("GET", base + "/raw", raw=True)
        self.assertEqual(status, 200)
        self.assertTrue(back.endswith(raw))  # the bytes received, after the trace header this hop added
        deadline = time.time() + 20
        while carol.get("/api/v1/search?q=quetzal")[1].get("total") != 1 and time.time() < deadline:
            time.sleep(0.2)
        status, hits = carol.get("/api/v1/search?q=quetzal")
        self.assertEqual((status, hits["total"]), (200, 1), hits)
        im = imaplib.IMAP4("127.0.0.1", self.imap)
        im.login("carol@example.com", "carol-pw-123")
        im.select("INBOX")
        typ, data = im.uid("FETCH", str(found[0]["uid"]), "(ENVELOPE BODY.PEEK[])")
        self.assertEqual(typ, "OK", data)
        self.assertIn(raw, b"".join(x[1] for x in data if isinstance(x, tuple)))
        im.logout()
        self.assertEqual(carol.get("/health"), (200, {"status": "ok"}))

    def test_chinese_mail_with_raw_header_bytes_reads_and_is_found_by_its_words(self):
        """A message as older Chinese mailers send it: the subject and the sender's name raw GB2312
        bytes (no encoded words), the charset named only in Content-Type. Through the SMTP door, the
        web view, the portal's search by a word inside the subject's run of letters, and IMAP's
        ENVELOPE (the name as an encoded word of what it says) all read it as written."""
        subject, name = "全新原装进口，送货上门", "王小明"
        raw = (b"From: " + name.encode("gb2312") + b" <wang@internet.example>\r\nTo: carol@example.com\r\n"
               b"Subject: " + subject.encode("gb2312") + b"\r\n"
               b"Message-ID: <gb." + str(time.time_ns()).encode() + b"@internet.example>\r\n"
               b"Date: Sun, 29 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: text/plain; charset=\"gb2312\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
               + "台湾鑫龙商贸集团公司向您拜年".encode("gb2312") + b"\r\n")
        with smtplib.SMTP("127.0.0.1", self.mx, timeout=30) as s:
            s.sendmail("wang@internet.example", ["carol@example.com"], raw)
        carol = Client(self.web)
        self.assertEqual(carol.login("carol@example.com", "carol-pw-123")[0], 200)
        m = self.find(carol, subject)
        fid = self.folder(carol, "INBOX")["id"]
        status, v = carol.get(f"/api/v1/messages/{fid}/{m['uid']}")
        self.assertEqual(status, 200, v)
        self.assertEqual(v["subject"], subject)
        self.assertEqual(v["from"][0]["name"], name)
        self.assertIn("商贸集团", v["text"])
        for q in ("原装", "subject:送货上门", "from:小明", "商贸集团"):
            deadline = time.time() + 20
            while carol.get("/api/v1/search?q=" + urllib.parse.quote(q))[1].get("total") != 1 and time.time() < deadline:
                time.sleep(0.2)
            status, hits = carol.get("/api/v1/search?q=" + urllib.parse.quote(q))
            self.assertEqual((status, hits["total"]), (200, 1), (q, hits))
        im = imaplib.IMAP4("127.0.0.1", self.imap)
        im.login("carol@example.com", "carol-pw-123")
        im.select("INBOX")
        typ, data = im.uid("FETCH", str(m["uid"]), "(ENVELOPE)")
        self.assertEqual(typ, "OK", data)
        envelope = b"".join(x if isinstance(x, bytes) else b"".join(x) for x in data)
        self.assertIn(b"=?UTF-8?b?" + base64.b64encode(name.encode()) + b"?=", envelope)
        im.logout()

    # ---- sending ----

    def test_send_reply_forward(self):
        data = b"%PDF-1.4 not really a pdf \x00\x01\x02" * 100
        status, sent = self.alice.post("/api/v1/send", {
            "to": ["Bob <bob@example.com>"], "subject": "Quarterly numbers ✓", "text": "Bob,\nnumbers attached.\n",
            "attachments": [{"filename": "numbers.pdf", "content_type": "application/pdf",
                             "data": base64.b64encode(data).decode()}]})
        self.assertEqual(status, 201, sent)
        got = self.find(self.bob, "Quarterly numbers ✓")
        v = self.bob.get(f"/api/v1/messages/{got['folder']}/{got['uid']}")[1]
        self.assertEqual(v["text"], "Bob,\nnumbers attached.\n")
        self.assertEqual(v["from"][0]["address"], "alice@example.com")
        self.assertEqual(v["from"][0]["name"], "Alice")
        (att,) = v["attachments"]
        status, _, back = self.bob.request("GET", f"/api/v1/messages/{got['folder']}/{got['uid']}/parts/{att['section']}", raw=True)
        self.assertEqual(back, data)
        self.find(self.alice, "Quarterly numbers ✓", folder="Sent")
        # Reply: In-Reply-To and References name the original, which is marked answered.
        status, sent = self.bob.post("/api/v1/send", {"to": ["alice@example.com"], "subject": "Re: Quarterly numbers ✓",
                                                      "text": "thanks", "reply_to_message": {"folder": got["folder"], "uid": got["uid"]}})
        self.assertEqual(status, 201, sent)
        self.assertIn("answered", self.bob.get(f"/api/v1/messages/{got['folder']}/{got['uid']}?peek=1")[1]["flags"])
        reply = self.find(self.alice, "Re: Quarterly numbers ✓")
        raw = self.alice.request("GET", f"/api/v1/messages/{reply['folder']}/{reply['uid']}/raw", raw=True)[2]
        parsed = email.message_from_bytes(raw)
        self.assertEqual(parsed["In-Reply-To"], v["message_id"])
        self.assertIn(v["message_id"], parsed["References"])
        # Forward: the original goes along whole.
        status, sent = self.bob.post("/api/v1/send", {"to": ["alice@example.com"], "subject": "Fwd: lunch",
                                                      "text": "see below", "forward_message": {"folder": got["folder"], "uid": got["uid"]}})
        self.assertEqual(status, 201, sent)
        fwd = self.find(self.alice, "Fwd: lunch")
        fv = self.alice.get(f"/api/v1/messages/{fwd['folder']}/{fwd['uid']}")[1]
        self.assertEqual([a["content_type"] for a in fv["attachments"]], ["message/rfc822"])
        # A client that asks before sending its body (Expect: 100-continue, as curl does above 1 KiB)
        # is told to go on once the header passed, and its message goes through.
        body = json.dumps({"to": ["alice@example.com"], "subject": "curl send", "text": "x" * 5000}).encode()
        s = socket.create_connection(("127.0.0.1", self.web), timeout=30)
        s.sendall(b"POST /api/v1/send HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: " + self.bob.cookie.encode() +
                  b"\r\nX-CSRF-Token: " + self.bob.csrf.encode() + b"\r\nContent-Type: application/json\r\n"
                  b"Expect: 100-continue\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        self.assertEqual(s.recv(4096), b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body)
        self.assertIn(b" 201 ", s.recv(4096))
        s.close()
        self.find(self.alice, "curl send")
        p = subprocess.run(["curl", "-sf", "-b", self.bob.cookie, "-H", "X-CSRF-Token: " + self.bob.csrf,
                            "-H", "Content-Type: application/json", "--data-binary", body,
                            f"http://127.0.0.1:{self.web}/api/v1/send"], capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        # Bob cannot send as alice, nor reply to a message of hers.
        self.assertEqual(self.bob.post("/api/v1/send", {"from": "alice@example.com", "to": ["x@example.com"], "text": "x"})[0], 400)
        a = self.find(self.alice, "alice report")
        self.assertEqual(self.bob.post("/api/v1/send", {"to": ["bob@example.com"], "text": "x",
                                                        "forward_message": {"folder": a["folder"], "uid": a["uid"]}})[0], 404)
        self.assertEqual(self.bob.post("/api/v1/send", {"to": ["not an address"], "text": "x"})[0], 400)
        self.assertEqual(self.bob.post("/api/v1/send", {"subject": "nobody"})[0], 400)

    def test_infected_send_is_refused(self):
        status, out = self.bob.post("/api/v1/send", {"to": ["someone@elsewhere.example"], "subject": "eicar",
                                                     "text": "x", "attachments": [{"filename": "e.com", "data": base64.b64encode(EICAR.encode()).decode()}]})
        self.assertEqual(status, 422, out)
        self.assertIn("554", out["error"])

    # ---- admin ----

    def test_admin_panic_button_queue_quarantine_users_stats(self):
        status, c = self.alice.get("/api/v1/admin/continuity")
        self.assertEqual(status, 200, c)
        self.assertIn(c["state"], ("normal", "active"))
        status, out = self.alice.post("/api/v1/admin/continuity/start", {"reason": "primary on fire"})
        self.assertEqual(status, 200, out)
        self.assertEqual(self.alice.get("/api/v1/admin/continuity")[1]["state"], "active")
        self.assertEqual(self.alice.get("/api/v1/session")[1]["continuity"], "active")
        status, out = self.alice.post("/api/v1/admin/continuity/stop")
        self.assertEqual(status, 200, out)
        self.assertIn(out["event"]["stopped_by"], ("web:alice@example.com [127.0.0.1]",))
        history = self.server.cli("continuity", "status")
        self.assertEqual(history["events"][0]["reason"], "primary on fire")

        # An infected message is quarantined (policy "quarantine"); the admin releases it over the API.
        with smtplib.SMTP("127.0.0.1", self.mx, timeout=30) as s:
            s.sendmail("sender@internet.example", ["bob@example.com"],
                       message("infected one", "bob@example.com", body=EICAR + "\r\n"))
        deadline = time.time() + 20
        held = []
        while time.time() < deadline and not held:
            held = [q for q in self.alice.get("/api/v1/admin/quarantine")[1]["entries"] if q["verdict"] == "infected"]
            time.sleep(0.2)
        self.assertTrue(held)
        qid = held[0]["id"]
        self.assertEqual(self.alice.post(f"/api/v1/admin/quarantine/{qid}/release")[0], 409)
        status, out = self.alice.post(f"/api/v1/admin/quarantine/{qid}/release", {"force": True})
        self.assertEqual(status, 200, out)
        self.assertEqual(out["status"], "released")
        self.assertIn("alice@example.com", out["decided_by"])
        self.assertEqual(self.alice.post(f"/api/v1/admin/quarantine/{qid}/release", {"force": True})[0], 400)
        queue = self.alice.get("/api/v1/admin/queue")[1]
        self.assertIn(qid, [e["id"] for e in queue["entries"]])
        users = self.alice.get("/api/v1/admin/users")[1]["users"]
        self.assertEqual(sorted(u["name"] for u in users), ["alice@example.com", "bob@example.com", "carol@example.com"])
        self.assertNotIn("scrypt", json.dumps(users))
        stats = self.alice.get("/api/v1/admin/stats")[1]
        self.assertGreaterEqual(stats["messages"], 4)
        self.assertGreaterEqual(stats["infected"], 1)

    def check_export(self, zipped):
        """A downloaded export, checked by the Python verifier (one message) and by `mailark
        verify-export`; returns the latter's report."""
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "case.zip")
            with open(path, "wb") as f:
                f.write(zipped)
            key = self.server.run("checkpoint", "key").stdout.decode().strip()
            self.assertEqual(tlog.verify_export(path, key), 1)
            p = self.server.run("verify-export", path, "--key", key, "--json")
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            return json.loads(p.stdout)

    def test_case_export_as_a_job(self):
        # A large case's export need not hold a request open: a job, polled, fetched, deleted.
        carol = Client(self.web)
        self.assertEqual(carol.login("carol@example.com", "carol-pw-123")[0], 200)
        status, made = carol.post("/api/v1/cases", {"name": "Quokka", "custodians": ["alice@example.com"]})
        self.assertEqual(status, 201, made)
        self.assertEqual(carol.post(f"/api/v1/cases/{made['id']}/searches", {"query": "zanzibar", "save": True})[0], 200)
        self.assertEqual(carol.post(f"/api/v1/cases/{made['id']}/export", {"async": "yes"})[0], 400)
        status, res, payload = carol.request("POST", f"/api/v1/cases/{made['id']}/export",
                                             {"format": "mbox", "async": True}, raw=True)
        self.assertEqual(status, 202, payload)
        job = json.loads(payload)
        self.assertEqual(res.getheader("Location"), "/api/v1/exports/" + job["job"])
        self.assertIn(job["state"], ("queued", "running", "done"))
        self.assertEqual(self.bob.get("/api/v1/exports")[0], 403)  # exports need the auditor (or admin) role
        deadline = time.time() + 60
        while job["state"] in ("queued", "running") and time.time() < deadline:
            time.sleep(0.1)
            status, job = carol.get("/api/v1/exports/" + job["job"])
            self.assertEqual(status, 200, job)
        self.assertEqual(job["state"], "done", job)
        self.assertEqual(job["messages"], 1)
        self.assertEqual((job["unsearchable"], job["older_reading"]), (0, 0), "its search judged every record")
        self.assertGreater(job["total"], 0)
        self.assertEqual(job["done"], job["total"])
        self.assertIn(job["job"], [j["job"] for j in self.alice.get("/api/v1/exports")[1]["exports"]])  # an admin sees it
        for _ in range(2):  # kept until deleted: fetched again
            status, res, zipped = carol.request("GET", job["file"], raw=True)
            self.assertEqual(status, 200, zipped[:300])
            self.assertEqual(res.getheader("X-Mailark-Manifest-SHA256"), job["manifest_sha256"])
            self.assertEqual(res.getheader("X-Mailark-Older-Reading"), "0")
            self.assertEqual(self.check_export(zipped)["messages"], 1)
        self.assertEqual(carol.request("DELETE", "/api/v1/exports/" + job["job"])[0], 200)
        self.assertEqual(carol.get("/api/v1/exports/" + job["job"])[0], 404)
        self.assertEqual(carol.get(job["file"])[0], 404)
        self.assertEqual([f for f in os.listdir(os.path.join(self.server.data, "tmp")) if f.startswith("export-")], [])
        entries = carol.get("/api/v1/audit?limit=10000")[1]["entries"]
        self.assertEqual([(e["actor"], e["detail"]["via"]) for e in entries
                          if e["action"] == "export" and e["detail"]["case"] == "Quokka"], [("web:carol@example.com", "rest")])

    def test_cases_over_rest_and_the_audit_log(self):
        carol = Client(self.web)
        self.assertEqual(carol.login("carol@example.com", "wrong password")[0], 401)
        self.assertEqual(carol.login("carol@example.com", "carol-pw-123")[0], 200)
        self.assertEqual(self.bob.get("/api/v1/cases")[0], 403)  # cases need the auditor (or admin) role
        self.assertEqual(self.bob.get("/api/v1/audit")[0], 403)
        status, made = carol.post("/api/v1/cases", {"name": "Zanzibar", "custodians": ["alice@example.com"]})
        self.assertEqual(status, 201, made)
        self.assertEqual(carol.post("/api/v1/cases", {"name": "zanzibar"})[0], 400)  # names are unique
        status, found = carol.post("/api/v1/cases/zanz/searches", {"query": "zanzibar", "save": True})
        self.assertEqual(status, 200, found)
        self.assertEqual(found["total"], 1)
        self.assertEqual([m["subject"] for m in found["messages"]], ["alice private plans"])
        # Bob's mail is outside the case's custodians even when the words match.
        self.assertEqual(carol.post(f"/api/v1/cases/{made['id']}/searches", {"query": "noodles"})[1]["total"], 0)
        status, held = carol.post(f"/api/v1/cases/{made['id']}/hold", {"hold": True, "reason": "notice"})
        self.assertEqual((status, held["hold"]), (200, True), held)
        self.assertEqual(carol.post(f"/api/v1/cases/{made['id']}/close")[0], 400)  # under hold
        self.assertEqual(carol.post(f"/api/v1/cases/{made['id']}/hold", {"hold": False})[0], 400)  # no reason
        status, shown = carol.get(f"/api/v1/cases/{made['id']}")
        self.assertEqual(shown["searches"][0]["messages"], 1)
        # A case of 1,500 custodians (more words than a typed query may hold) is searched and counted
        # like any other: its custodians are the case's scope, outside the bound (engine/cases.h).
        wide = ["alice@example.com"] + [f"person{i}@example.com" for i in range(1499)]
        status, big = carol.post("/api/v1/cases", {"name": "Company-wide", "custodians": wide})
        self.assertEqual(status, 201, big)
        status, found = carol.post(f"/api/v1/cases/{big['id']}/searches", {"query": "zanzibar", "save": True})
        self.assertEqual((status, found.get("total")), (200, 1), found)
        self.assertEqual(carol.get(f"/api/v1/cases/{big['id']}")[1]["searches"][0]["messages"], 1)
        status, refused = carol.post(f"/api/v1/cases/{big['id']}/searches",
                                     {"query": " OR ".join(f"w{i}" for i in range(1025))})
        self.assertEqual(status, 400, refused)
        # The case's export over REST: the zip `mailark case export` writes, sent from a file, checked
        # by both verifiers; nothing is left behind in DATA/tmp.
        self.assertEqual(self.bob.post(f"/api/v1/cases/{made['id']}/export")[0], 403)
        self.assertEqual(carol.post(f"/api/v1/cases/{made['id']}/export", {"format": "pdf"})[0], 400)
        status, res, payload = carol.request("POST", f"/api/v1/cases/{made['id']}/export", {"format": "eml"}, raw=True)
        self.assertEqual(status, 200, payload[:300])
        self.assertEqual(res.getheader("Content-Type"), "application/zip")
        self.assertEqual(int(res.getheader("Content-Length")), len(payload))
        self.assertEqual(res.getheader("X-Mailark-Messages"), "1")
        self.assertEqual(self.check_export(payload)["case"], "Zanzibar")
        self.assertEqual([f for f in os.listdir(os.path.join(self.server.data, "tmp")) if f.startswith("export-")], [])
        # The same store as the CLI's, beside the running server.
        cli = self.server.cli("case", "show", "Zanzibar")
        self.assertTrue(cli["hold"])
        viewed = self.find(self.alice, "alice private plans")
        self.assertEqual(self.alice.get(f"/api/v1/messages/{viewed['folder']}/{viewed['uid']}")[0], 200)
        # An end user's IMAP login and what the session read are in the log too (one entry a session).
        im = imaplib.IMAP4("127.0.0.1", self.imap)
        im.login("bob@example.com", "bob-pw-123")
        im.select("INBOX")
        self.assertEqual(im.search(None, "TEXT", '"noodles"')[0], "OK")
        typ, data = im.fetch("1:*", "(BODY.PEEK[])")
        self.assertEqual(typ, "OK")
        read = len([d for d in data if isinstance(d, tuple)])
        self.assertGreater(read, 0)
        im.logout()
        entries = carol.get("/api/v1/audit?limit=10000")[1]["entries"]
        seen = [(e["actor"], e["action"], e["target"]) for e in entries]
        self.assertIn(("imap:bob@example.com", "login", "bob@example.com"), seen)
        views = [e["detail"] for e in entries if e["action"] == "imap.views" and e["actor"] == "imap:bob@example.com"]
        self.assertEqual(len(views), 1, views)
        self.assertEqual(views[0]["messages"], read)
        self.assertEqual(views[0]["searches"], 1)
        self.assertEqual(views[0]["search_criteria"], ['TEXT "noodles"'])
        for want in [("web:carol@example.com", "login.failed", "carol@example.com"),
                     ("web:carol@example.com", "login", "carol@example.com"),
                     ("web:carol@example.com", "case.create", "Zanzibar"),
                     ("web:carol@example.com", "case.search.save", "Zanzibar"),
                     ("web:carol@example.com", "case.hold", "Zanzibar"),
                     ("web:alice@example.com", "search", "zanzibar"),
                     ("web:alice@example.com", "show", str(viewed["id"]))]:
            self.assertIn(want, seen)
        exports = [e for e in entries if e["action"] == "export" and e["detail"]["case"] == "Zanzibar"]
        self.assertEqual([(e["actor"], e["detail"]["case"], e["detail"]["via"]) for e in exports],
                         [("web:carol@example.com", "Zanzibar", "rest")])
        self.assertTrue(self.server.cli("audit", "verify")["ok"])

    def test_retention_policy_over_rest(self):
        # The admin sets policy; an auditor runs cases but does not.
        carol = Client(self.web)
        self.assertEqual(carol.login("carol@example.com", "carol-pw-123")[0], 200)
        self.assertEqual(carol.get("/api/v1/admin/retention")[0], 403)
        self.assertEqual(self.bob.request("PUT", "/api/v1/admin/retention", {"default": "1d"})[0], 403)
        status, shown = self.alice.get("/api/v1/admin/retention")
        self.assertEqual(status, 200, shown)
        self.assertEqual(shown["tombstones"], 0)
        status, out = self.alice.request("PUT", "/api/v1/admin/retention",
                                         {"minimum": "1y", "default": "7y",
                                          "rules": ["inbound:2y", "domain=partner.example:10y"]})
        self.assertEqual(status, 200, out)
        self.assertEqual((out["policy"]["minimum_days"], out["policy"]["default_days"]), (365, 2555))
        self.assertEqual(sorted(r["text"] for r in out["policy"]["rules"]), ["domain=partner.example:3650", "inbound:730"])
        self.assertEqual(out["policy"]["set_by"], "web:alice@example.com")
        # The archive's one policy: the CLI beside the server reads what the API wrote.
        cli = self.server.cli("retention", "show")["policy"]
        self.assertEqual((cli["minimum_days"], cli["default_days"], len(cli["rules"])), (365, 2555, 2))
        # The minimum is never lowered, and nothing may be shorter than it.
        status, why = self.alice.request("PUT", "/api/v1/admin/retention", {"minimum": 30})
        self.assertEqual(status, 400, why)
        self.assertIn("minimum", json.dumps(why))
        self.assertEqual(self.alice.request("PUT", "/api/v1/admin/retention", {"rules": ["outbound:30"]})[0], 400)
        for bad in ({"minimum": [1]}, {"default": -5}, {"rules": "inbound:2y"}, {"rules": [7]},
                    {"surprise": 1}, {"rules": ["sideways:2y"]}, [], b"{not json", b"\xff\xfe"):
            status, why = self.alice.request("PUT", "/api/v1/admin/retention", bad)
            self.assertEqual(status, 400, (bad, why))
        self.assertEqual(self.server.cli("retention", "show")["policy"]["minimum_days"], 365, "nothing refused was written")
        # What is absent stays: the default alone changes.
        status, out = self.alice.request("PUT", "/api/v1/admin/retention", {"default": "forever"})
        self.assertEqual(status, 200, out)
        self.assertEqual((out["policy"]["default_days"], len(out["policy"]["rules"])), (0, 2))
        entries = self.alice.get("/api/v1/audit?limit=10000")[1]["entries"]
        sets = [e for e in entries if e["action"] == "retention.set" and e["actor"] == "web:alice@example.com"]
        self.assertEqual(len(sets), 2, sets)
        self.assertEqual((sets[0]["detail"]["before"]["minimum_days"], sets[0]["detail"]["after"]["minimum_days"]), (0, 365))
        self.assertEqual((sets[1]["detail"]["before"]["default_days"], sets[1]["detail"]["after"]["default_days"]), (2555, 0))

    def metrics(self):
        status, _, text = self.alice.request("GET", "/metrics", raw=True)
        self.assertEqual(status, 200)
        text = text.decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values, text

    def test_a_metrics_scrape_commits_nothing(self):
        """A monitoring system scrapes /metrics every few seconds: a scrape commits nothing (each commit
        writes the index blocks it changes), and the lag gauge still reads what a search would miss."""
        self.assertEqual(self.alice.get("/api/v1/search?q=zanzibar")[0], 200)  # what is archived, committed
        values, _ = self.metrics()
        commits, archived = values["mailark_index_commits_total"], values["mailark_archive_messages"]
        with smtplib.SMTP("127.0.0.1", self.mx, timeout=30) as s:
            s.sendmail("sender@internet.example", ["alice@example.com"],
                       message("otter census", "alice@example.com", body="the otter census\r\n"))
        # Lag 0 once the index threads have the message, though nothing committed it.
        deadline = time.time() + 30
        while time.time() < deadline:
            values, _ = self.metrics()
            if values["mailark_archive_messages"] > archived and values["mailark_index_lag_messages"] == 0:
                break
            time.sleep(0.1)
        self.assertEqual((values["mailark_archive_messages"], values["mailark_index_lag_messages"]), (archived + 1, 0))
        for _ in range(5):
            self.assertEqual(self.metrics()[0]["mailark_index_commits_total"], commits, "a scrape committed the index")
        # A search asks for the commit, and finds it (once the follower has placed it in alice's INBOX:
        # her search sees her messages only).
        deadline = time.time() + 30
        while self.alice.get("/api/v1/search?q=otter")[1]["total"] != 1 and time.time() < deadline:
            time.sleep(0.1)
        self.assertEqual(self.alice.get("/api/v1/search?q=otter")[1]["total"], 1)
        self.assertGreater(self.metrics()[0]["mailark_index_commits_total"], commits)

    def test_only_a_search_that_needs_new_mail_commits_the_index(self):
        """A user's search commits the index only when one of the user's messages is past what it has
        committed; a folder's listing never does (the page refreshes every 30 s; a message the index
        has not committed is read from the archive)."""
        self.assertEqual(self.alice.get("/api/v1/search?q=zanzibar")[1]["total"], 1)  # all committed
        commits = self.metrics()[0]["mailark_index_commits_total"]
        with smtplib.SMTP("127.0.0.1", self.mx, timeout=30) as s:
            s.sendmail("sender@internet.example", ["alice@example.com"],
                       message("walrus tally", "alice@example.com", body="the walrus tally\r\n"))
        self.find(self.alice, "walrus tally")  # the listing, until it shows it
        self.assertEqual(self.metrics()[0]["mailark_index_commits_total"], commits, "a listing committed the index")
        self.assertEqual(self.bob.get("/api/v1/search?q=noodles")[1]["total"], 1)
        self.assertEqual(self.metrics()[0]["mailark_index_commits_total"], commits,
                         "bob's search, none of his messages new, committed the index")
        self.assertEqual(self.alice.get("/api/v1/search?q=walrus")[1]["total"], 1)
        self.assertGreater(self.metrics()[0]["mailark_index_commits_total"], commits)

    def test_metrics(self):
        values, text = self.metrics()
        accepted = sum(v for k, v in values.items() if k.startswith("mailark_smtp_messages_total{") and 'result="accepted"' in k)
        self.assertGreaterEqual(accepted, 3)
        self.assertGreaterEqual(values.get('mailark_scan_verdicts_total{verdict="clean"}', 0), 3)
        self.assertGreaterEqual(values.get("mailark_archive_commit_seconds_count", 0), 1)
        self.assertIn('mailark_queue_depth{route="primary"}', values)
        self.assertIn('mailark_continuity_state{state="normal"}', values)
        self.assertIn("mailark_index_lag_messages", values)
        # What a search cannot judge: nothing in a folder this release wrote (test_upgrade.py shows counts).
        self.assertEqual(values.get("mailark_index_unsearchable_records"), 0)
        self.assertEqual(values.get("mailark_index_older_reading_documents"), 0)
        self.assertGreater(values.get("mailark_disk_free_bytes", 0), 0)
        self.assertGreater(values.get("mailark_disk_reserve_bytes", 0), 0)  # store_bytes + 64 MiB by default
        self.assertIn("# TYPE mailark_scan_seconds histogram", text)


class WebTlsTest(unittest.TestCase):
    """web.tls = "implicit": HTTPS with the server's certificate, Secure cookies, HSTS; curl logs in."""

    def test_https(self):
        web = free_port()
        server = Server(f"""
[web]
listen = "127.0.0.1:{web}"
tls = "implicit"
[[listener]]
name = "mx"
role = "inbound"
port = {free_port()}
tls = "none"
""", wait_port=web)
        try:
            server.add_user("carol@example.com", "carol-pw-123")
            server.start()
            with tempfile.TemporaryDirectory() as d:
                jar = os.path.join(d, "jar")
                p = subprocess.run(["curl", "-sk", "-D", "-", "-c", jar, "-H", "Content-Type: application/json",
                                    "-d", json.dumps({"user": "carol@example.com", "password": "carol-pw-123"}),
                                    f"https://127.0.0.1:{web}/api/v1/login"], capture_output=True, timeout=30)
                self.assertEqual(p.returncode, 0, p.stderr)
                head = p.stdout.decode()
                self.assertIn(" 200 ", head.splitlines()[0])
                cookie = next(l for l in head.splitlines() if l.lower().startswith("set-cookie:"))
                self.assertIn("Secure", cookie)
                self.assertIn("Strict-Transport-Security", head)
                p = subprocess.run(["curl", "-sfk", "-b", jar, f"https://127.0.0.1:{web}/api/v1/folders"],
                                   capture_output=True, timeout=30)
                self.assertEqual(p.returncode, 0, p.stderr)
                self.assertIn("INBOX", [f["name"] for f in json.loads(p.stdout)["folders"]])
            # Plain HTTP to the TLS port gets nothing.
            p = subprocess.run(["curl", "-s", "-m", "10", f"http://127.0.0.1:{web}/health"], capture_output=True, timeout=30)
            self.assertNotEqual(p.returncode, 0)
        finally:
            server.cleanup()


class WebLimitsTest(unittest.TestCase):
    """The listener's limits, on a server of their own (rate limits would disturb the other tests)."""

    @classmethod
    def setUpClass(cls):
        cls.web = free_port()
        cls.server = Server(f"""
[web]
listen = "127.0.0.1:{cls.web}"
requests_per_second = 5
connections_per_ip = 4
[[listener]]
name = "mx"
role = "inbound"
port = {free_port()}
tls = "none"
""", wait_port=cls.web)
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.cleanup()

    def test_limits(self):
        # A body larger than 64 KiB on anything but a logged-in send: 413 before the body is read.
        s = socket.create_connection(("127.0.0.1", self.web), timeout=10)
        s.sendall(b"POST /api/v1/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 900000000\r\n\r\n")
        self.assertIn(b" 413 ", s.recv(4096))
        s.close()
        s = socket.create_connection(("127.0.0.1", self.web), timeout=10)
        s.sendall(b"POST /api/v1/send HTTP/1.1\r\nHost: x\r\nContent-Length: 900000000\r\n\r\n")
        self.assertIn(b" 413 ", s.recv(4096))
        s.close()
        # A header past 16 KiB: 431.
        s = socket.create_connection(("127.0.0.1", self.web), timeout=10)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        self.assertIn(b" 431 ", s.recv(4096))
        s.close()
        # Connections per client: the fifth is answered 503 and closed.
        held = [socket.create_connection(("127.0.0.1", self.web), timeout=10) for _ in range(4)]
        time.sleep(0.3)
        extra = socket.create_connection(("127.0.0.1", self.web), timeout=10)
        self.assertIn(b" 503 ", extra.recv(4096))
        extra.close()
        for h in held:
            h.close()
        time.sleep(0.3)
        # Requests per second: a burst of 50 (ten times the rate) passes, then 429 with Retry-After.
        statuses = []
        c = http.client.HTTPConnection("127.0.0.1", self.web, timeout=10)
        for _ in range(80):
            c.request("GET", "/health")
            r = c.getresponse()
            r.read()
            statuses.append(r.status)
            if r.status == 429:
                self.assertEqual(r.getheader("Retry-After"), "1")
        c.close()
        self.assertIn(429, statuses)
        self.assertGreaterEqual(statuses.count(200), 45)
        time.sleep(2)
        c = http.client.HTTPConnection("127.0.0.1", self.web, timeout=10)
        c.request("GET", "/health")
        self.assertEqual(c.getresponse().status, 200)  # the bucket refills
        c.close()
        self.assertIsNone(self.server.proc.poll())


class WebBodyRoomTest(unittest.TestCase):
    """api/http/server.h: bodies over 64 KiB take room among the bodies being received over all
    connections (the portal's: limits.store_bytes in sends, 4/3 for base64); without room the answer
    is 503 with Retry-After before the body is sent. Before, one logged-in user's connections (100
    per address, 1,000 in all) could each hold a send of 4/3 of the message limit."""

    def test_large_bodies_over_many_connections_share_a_bounded_room(self):
        web = free_port()
        server = Server(f"""
[server]
hostname = "mx.test.example"
[inbound]
domains = ["example.com"]
[web]
listen = "127.0.0.1:{web}"
[limits]
message_bytes = 2097152
[[listener]]
name = "mx"
role = "inbound"
port = {free_port()}
tls = "none"
""", wait_port=web)
        self.addCleanup(server.cleanup)
        server.add_user("alice@example.com", "alice-pw")
        server.start()
        alice = Client(web)
        self.assertEqual(alice.login("alice@example.com", "alice-pw")[0], 200)
        # Room: (4 x (2 MiB + 64 KiB)) x 4/3 + 1 MiB = 12,582,912 bytes: three bodies of 3.5 MB, not four (each under the body limit, 2 MiB x 4/3 + 1 MiB).
        size = 3_500_000

        def body(i):
            text = json.dumps({"to": ["alice@example.com"], "subject": f"roomy {i}", "text": f"send {i}\n"})
            return (text + " " * (size - len(text))).encode()  # JSON allows the blanks

        def start(expect_continue=True):
            sk = socket.create_connection(("127.0.0.1", web), timeout=30)
            sk.sendall(f"POST /api/v1/send HTTP/1.1\r\nHost: x\r\nCookie: {alice.cookie}\r\n"
                       f"X-CSRF-Token: {alice.csrf}\r\nContent-Type: application/json\r\n"
                       f"Content-Length: {size}\r\n{'Expect: 100-continue' + chr(13) + chr(10) if expect_continue else ''}"
                       f"\r\n".encode())
            return sk

        def answer(sk):
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sk.recv(65536)
                if not chunk:
                    break
                data += chunk
            return data

        socks = [start() for _ in range(3)]
        for sk in socks:  # "100 Continue": the header passed, with room for the body
            self.assertIn(b" 100 ", answer(sk))
        refused = start(expect_continue=False)
        busy = answer(refused)
        self.assertIn(b" 503 ", busy)
        self.assertIn(b"Retry-After: 5", busy)
        refused.close()
        self.assertIn("refused for now", server.server_log())
        socks[0].sendall(body(0))
        self.assertIn(b" 201 ", answer(socks[0]))
        again = start()  # room again
        self.assertIn(b" 100 ", answer(again))
        for i, sk in ((1, socks[1]), (2, socks[2]), (3, again)):
            sk.sendall(body(i))
            self.assertIn(b" 201 ", answer(sk), i)
        for sk in socks + [again]:
            sk.close()
        for i in range(4):
            self.assertEqual(server.wait_for(f'subject:"roomy {i}"')["total"], 1, i)


if __name__ == "__main__":
    unittest.main()
