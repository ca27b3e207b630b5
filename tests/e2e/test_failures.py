"""The SMTP door under failure and at its limits, against the real server:

- the archive's disk fills: 451 for that message, 250 again once there is room (nothing latches);
- the index's disk fills: every message still gets its 250; search says it lags, then catches up;
- the audit log's disk fills: the portal's searches answer 503 and show nothing; mail goes on;
- the scanner's temporary folder fills: 451 4.7.1, never a message passed as scanned;
- a message of exactly the configured maximum is accepted and reads back byte for byte;
- unscannable mail under each policy (reject, quarantine, deliver), and an administrator's release;
- the outbound listener refuses a foreign client before any TLS handshake;
- a session's overall deadline; one writer per data folder; a reload under load drops nothing;
- libclamav's scan processes (scanner.isolation = "process") die: the server goes on (a dead child is replaced; a dead host makes
  scans 451 until a reload starts a new one), never a message passed as scanned.

Disk-full cases mount small tmpfs file systems (root only; skipped with the reason otherwise).
"""
import imaplib
import json
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import threading
import time
import unittest
import zipfile

from harness import BIN, Server, free_port, insecure_tls, read_replies, scratch
from test_delivery import SINK, Sink


class Tmpfs:
    def __init__(self, path, size):
        self.path = path
        os.makedirs(path, exist_ok=True)
        self.mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                                      capture_output=True).returncode == 0

    def fill(self, leave=0):
        """Fills what is free, leaving `leave` bytes (the filler grows; call free() to give it back)."""
        st = os.statvfs(self.path)
        room = st.f_bavail * st.f_frsize - leave
        with open(os.path.join(self.path, "filler"), "ab") as f:
            chunk = b"f" * 65536
            try:
                while room > 0:
                    f.write(chunk[:min(room, len(chunk))])
                    room -= len(chunk)
                f.flush()
            except OSError:
                pass

    def free(self):
        try:
            os.remove(os.path.join(self.path, "filler"))
        except FileNotFoundError:
            pass

    def unmount(self):
        if self.mounted:
            subprocess.run(["umount", "-l", self.path], capture_output=True)


def config(inbound_port, extra_inbound="", extra="", primary=None):
    return f"""
[server]
hostname = "mx.test.example"
[[listener]]
name = "mx"
role = "inbound"
port = {inbound_port}
tls = "none"
[inbound]
domains = ["example.com"]
verify_recipients = "none"
{extra_inbound}
[delivery]
primary = [{f'"127.0.0.1:{primary}"' if primary else ''}]
retry_schedule = [1]
[archive]
{extra}
"""


def send(port, subject, body="hello\r\n", rcpt="ana@example.com", attachment=None):
    """Sends one message; returns (code, text) of the final reply."""
    msg = f"From: someone@outside.example\r\nTo: {rcpt}\r\nSubject: {subject}\r\nMessage-ID: <{subject.replace(' ', '.')}@x>\r\n"
    if attachment:
        name, data = attachment
        import base64
        b64 = base64.encodebytes(data).decode().replace("\n", "\r\n")
        msg += ("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
                f"{body}\r\n--B\r\nContent-Type: application/zip; name={name}\r\nContent-Transfer-Encoding: base64\r\n"
                f"Content-Disposition: attachment; filename={name}\r\n\r\n{b64}--B--\r\n")
    else:
        msg += "\r\n" + body
    s = smtplib.SMTP("127.0.0.1", port, timeout=60)
    try:
        s.sendmail("someone@outside.example", [rcpt], msg.encode())
        return 250, ""
    except smtplib.SMTPDataError as e:
        return e.smtp_code, e.smtp_error.decode()
    finally:
        try:
            s.quit()
        except smtplib.SMTPException:
            pass


def encrypted_zip():
    folder = scratch("mailark-zip-")
    with open(os.path.join(folder, "secret.txt"), "w") as f:
        f.write("the numbers for the quarter\n")
    subprocess.run(["zip", "-q", "-P", "password", "enc.zip", "secret.txt"], cwd=folder, check=True)
    with open(os.path.join(folder, "enc.zip"), "rb") as f:
        return f.read()


class FailuresTest(unittest.TestCase):
    def setUp(self):
        self.servers, self.mounts, self.sinks = [], [], []

    def tearDown(self):
        for s in self.servers:
            rc = s.stop()
            self.assertEqual(rc, 0, s.server_log()[-3000:])
        for sink in self.sinks:
            sink.stop()
        for m in reversed(self.mounts):
            m.unmount()
        for s in self.servers:
            s.cleanup()

    def server(self, text, data=None, env=None):
        s = Server(text, data=data, env=env)
        self.servers.append(s)
        return s

    def tmpfs(self, path, size):
        t = Tmpfs(path, size)
        if not t.mounted:
            self.skipTest("mounting a small tmpfs for a disk-full test needs root")
        self.mounts.append(t)
        return t

    def until(self, cond, what, server, seconds=30):
        deadline = time.time() + seconds
        while not cond():
            if time.time() > deadline:
                self.fail(f"{what} did not happen; server log:\n{server.server_log()[-3000:]}")
            time.sleep(0.1)

    def test_archive_disk_full_defers_that_message_and_recovers(self):
        port = free_port()
        data = scratch("mailark-data-")
        disk = self.tmpfs(os.path.join(data, "archive"), "4m")
        # No reserve: what a disk that fills anyway does (the reserve's own test is below).
        srv = self.server(config(port, extra="[limits]\ndisk_reserve_bytes = 0"), data=data).start()
        self.assertEqual(send(port, "before full")[0], 250)
        disk.fill()
        code, text = send(port, "while full")
        self.assertEqual(code, 451, text)
        self.assertIn("4.3.0", text)
        disk.free()
        for i in range(3):
            self.assertEqual(send(port, f"after full {i}")[0], 250, "nothing latched")
        self.assertEqual(srv.wait_for("subject:full", 4)["total"], 4)
        self.assertEqual(srv.search("subject:while")["total"], 0, "the refused message was never half stored")
        self.assertIn("No space left on device", srv.server_log())
        self.assertTrue(srv.cli("verify")["intact"])

    def test_a_disk_short_of_its_reserve_refuses_new_mail_and_keeps_what_it_took(self):
        """api/disk_reserve.h: new mail from outside is refused while writing it would leave less than
        limits.disk_reserve_bytes free (SMTP 452 4.3.1 at MAIL with its SIZE, or at the end of a
        message that crosses the reserve while it arrives, its spool freed at once; IMAP APPEND NO
        [OVERQUOTA] before the literal is sent; a web send 503; a case export written to DATA/tmp
        507), and accepted again once there is room. Before, mail was taken until the disk was full and the archive's own commits failed."""
        from test_web import Client
        port, imap_port, web_port = free_port(), free_port(), free_port()
        data = scratch("mailark-data-")
        disk = self.tmpfs(data, "64m")
        reserve = 16 << 20
        alerts = os.path.join(scratch("mailark-alerts-"), "alerts.jsonl")
        srv = self.server(config(port, extra=f"""
[alerts]
command = "cat >> {alerts}; echo >> {alerts}"
[limits]
message_bytes = 8388608
spill_bytes = 65536
disk_reserve_bytes = {reserve}
[web]
listen = "127.0.0.1:{web_port}"
[[listener]]
name = "imap"
role = "imap"
address = "127.0.0.1"
port = {imap_port}
tls = "none"
"""), data=data)
        srv.add_user("ana@example.com", "ana-pw")
        srv.add_user("carol@example.com", "carol-pw-123", "auditor")
        srv.start()

        def free():
            st = os.statvfs(data)
            return st.f_bavail * st.f_frsize

        def mail_from(size=None):
            """The reply to MAIL FROM (with SIZE=size when given)."""
            sk = socket.create_connection(("127.0.0.1", port), timeout=30)
            try:
                read_replies(sk, 1)
                sk.sendall(b"EHLO client.example\r\n")
                read_replies(sk, 1)
                sk.sendall(b"MAIL FROM:<a@outside.example>" + (f" SIZE={size}".encode() if size is not None else b"") + b"\r\n")
                return read_replies(sk, 1)[1].strip()
            finally:
                sk.close()

        def imap():
            sk = socket.create_connection(("127.0.0.1", imap_port), timeout=30)
            f = sk.makefile("rb")
            f.readline()
            sk.sendall(b"a LOGIN ana@example.com ana-pw\r\n")
            self.assertTrue(tagged(f, b"a").startswith(b"a OK"))
            return sk, f

        def tagged(f, tag):
            while True:
                line = f.readline()
                if not line or line.startswith(tag + b" ") or line.startswith(b"+"):
                    return line

        def append(size):
            """(whether the client was asked for the literal, the tagged answer)."""
            sk, f = imap()
            try:
                body = b"Subject: appended\r\n\r\n" + b"x" * size
                sk.sendall(b"b APPEND INBOX {" + str(len(body)).encode() + b"}\r\n")
                first = tagged(f, b"b")
                if not first.startswith(b"+"):
                    return False, first.decode().strip()  # refused before the literal was sent
                sk.sendall(body + b"\r\n")
                return True, tagged(f, b"b").decode().strip()
            finally:
                sk.close()

        ana = Client(web_port)
        self.assertEqual(ana.login("ana@example.com", "ana-pw")[0], 200)

        def web_send(subject):
            return ana.post("/api/v1/send", {"to": ["ana@example.com"], "subject": subject, "text": "hi\n"})

        carol = Client(web_port)  # an auditor: a case's export is written to DATA/tmp before it is sent
        self.assertEqual(carol.login("carol@example.com", "carol-pw-123")[0], 200)
        status, case = carol.post("/api/v1/cases", {"name": "Short"})
        self.assertEqual(status, 201, case)

        def export():
            status, res, payload = carol.request("POST", f"/api/v1/cases/{case['id']}/export", {}, raw=True)
            return status, payload

        # 4 MiB of room: everything goes; a declared size past the room (under the message limit) is
        # refused at MAIL, a small one is not.
        disk.fill(leave=reserve + (4 << 20))
        self.assertEqual(send(port, "before short")[0], 250)
        srv.wait_for("subject:before")
        self.assertEqual(carol.post(f"/api/v1/cases/{case['id']}/searches", {"query": "subject:before", "save": True})[0], 200)
        room = free() - reserve
        self.assertTrue(mail_from(room + (1 << 20)).startswith("452 4.3.1"))
        self.assertTrue(mail_from(1000).startswith("250"))
        self.assertTrue(append(100)[1].startswith("b OK"), "a small APPEND")
        self.assertEqual(web_send("sent with room")[0], 201)

        # 2 MiB of room: a 5 MiB message crosses the reserve while it arrives. Refused at its end,
        # and what the spool kept of it is given back at once.
        disk.free()
        disk.fill(leave=reserve + (2 << 20))
        before = free()
        sk = socket.create_connection(("127.0.0.1", port), timeout=60)
        try:
            read_replies(sk, 1)
            sk.sendall(b"EHLO client.example\r\nMAIL FROM:<a@outside.example>\r\nRCPT TO:<ana@example.com>\r\nDATA\r\n")
            self.assertEqual(read_replies(sk, 4)[0][-1], "354")  # no SIZE: the server cannot know yet
            sk.sendall(b"Subject: crosses the reserve\r\n\r\n" + (b"y" * 998 + b"\r\n") * 5000 + b".\r\n")
            end = sk.recv(4096).decode()
        finally:
            sk.close()
        self.assertTrue(end.startswith("452 4.3.1"), end)
        self.assertGreater(free(), before - (1 << 20), "the spilled part was freed")

        # Under the reserve: every door refuses, nothing is half taken.
        disk.free()
        disk.fill(leave=reserve - (1 << 20))
        self.assertTrue(mail_from().startswith("452 4.3.1"))
        self.assertEqual(append(100), (True, "b NO [OVERQUOTA] Not enough disk space"))
        self.assertEqual(append(200000), (False, "b NO [OVERQUOTA] Not enough disk space"), "refused before the literal")
        status, body = web_send("sent while short")
        self.assertEqual(status, 503, body)
        self.assertIn("452 4.3.1", json.dumps(body))
        status, payload = export()
        self.assertEqual(status, 507, payload)
        self.assertIn(b"limits.disk_reserve_bytes", payload)
        self.assertEqual([f for f in os.listdir(os.path.join(data, "tmp")) if f.startswith("export-")], [],
                         "nothing left behind")

        # Room again: accepted again, nothing latched.
        disk.free()
        self.assertEqual(send(port, "after short")[0], 250)
        self.assertTrue(append(200000)[1].startswith("b OK"), "a large APPEND")
        self.assertEqual(web_send("sent after")[0], 201)
        status, payload = export()
        self.assertEqual(status, 200, payload[:300])
        self.assertTrue(payload.startswith(b"PK"), "a zip")
        log = srv.server_log()
        self.assertIn("under the reserve", log)
        self.assertIn("new mail is accepted", log)
        # The admins were told both times (alerts.command here; webhooks and e-mail get the same).
        deadline = time.time() + 20
        kinds = []
        while time.time() < deadline:
            if os.path.exists(alerts):
                with open(alerts) as f:
                    kinds = [json.loads(l)["kind"] for l in f if l.strip()]
            if "disk_ok" in kinds:
                break
            time.sleep(0.1)
        self.assertEqual(kinds, ["disk_short", "disk_ok"], srv.server_log()[-2000:])
        self.assertEqual(srv.wait_for("subject:short", 2)["total"], 2)  # before and after, never while
        self.assertEqual(srv.search("subject:crosses")["total"], 0)
        # The index commits every 100 ms and a server archives in the order messages finish (the
        # 200,000-byte APPEND may be indexed after the mail sent later): wait for each, bounded.
        self.assertEqual(srv.wait_for("subject:appended", 2)["total"], 2)
        self.assertEqual(srv.wait_for("subject:sent", 2)["total"], 2)
        self.assertTrue(srv.cli("verify")["intact"])

    def test_a_case_export_that_crosses_the_reserve_midway_stops_and_leaves_nothing(self):
        """api/web/portal.cc write_case_export: an export (written to DATA/tmp before it is sent, as
        large as the case) that starts with room asks again every 256 messages, and stops with 507
        once it would have left less than limits.disk_reserve_bytes free, its files removed; with
        room it completes. The test above shows the refusal before an export starts."""
        from test_web import Client
        import base64
        import random
        rnd = random.Random(11)
        box = scratch("mailark-box-")
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(box, sub))
        count = 600
        for i in range(count):  # about 20 KB each, incompressible: 12 MB, the zip's size
            body = base64.encodebytes(rnd.randbytes(15000)).decode().replace("\n", "\r\n")
            with open(os.path.join(box, "cur", f"{1700000000 + i}.{i}.host:2,S"), "w", newline="") as f:
                f.write(f"From: someone@outside.example\r\nTo: ana@example.com\r\nSubject: bulk {i}\r\n"
                        f"Message-ID: <bulk-{i}@x>\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\n\r\n{body}")
        port, web_port = free_port(), free_port()
        data = scratch("mailark-data-")
        disk = self.tmpfs(data, "64m")
        p = subprocess.run([BIN, "--data", data, "import", "--no-scan", "--json", "--disk-reserve", "0", box],
                           capture_output=True, timeout=300)
        self.assertEqual(p.returncode, 0, p.stderr.decode())
        self.assertEqual(json.loads(p.stdout)["imported"], count)
        reserve = 16 << 20
        srv = self.server(config(port, extra=f"""
[limits]
disk_reserve_bytes = {reserve}
[web]
listen = "127.0.0.1:{web_port}"
"""), data=data)
        srv.add_user("carol@example.com", "carol-pw-123", "auditor")
        srv.start()
        carol = Client(web_port)
        self.assertEqual(carol.login("carol@example.com", "carol-pw-123")[0], 200)
        status, case = carol.post("/api/v1/cases", {"name": "Bulk"})
        self.assertEqual(status, 201, case)
        self.assertEqual(carol.post(f"/api/v1/cases/{case['id']}/searches", {"query": "subject:bulk", "save": True})[0], 200)

        def free():
            st = os.statvfs(data)
            return st.f_bavail * st.f_frsize

        def export():
            status, res, payload = carol.request("POST", f"/api/v1/cases/{case['id']}/export", {}, raw=True)
            return status, payload

        # 6 MiB of room over the reserve: the export starts (it would be refused at once under it),
        # and its 12 MB would cross the reserve on the way.
        disk.fill(leave=reserve + (6 << 20))
        before = free()
        self.assertGreaterEqual(before, reserve)
        status, payload = export()
        self.assertEqual(status, 507, payload[:300])
        self.assertIn(b"limits.disk_reserve_bytes", payload)
        self.assertEqual([f for f in os.listdir(os.path.join(data, "tmp")) if f.startswith("export-")], [],
                         "nothing left behind")
        self.assertGreater(free(), before - (1 << 20), "what it wrote was removed")
        self.assertIn("under the reserve", srv.server_log())  # the export's check found it, on the way

        disk.free()
        status, res, payload = carol.request("POST", f"/api/v1/cases/{case['id']}/export", {}, raw=True)
        self.assertEqual(status, 200, payload[:300])
        self.assertTrue(payload.startswith(b"PK"), "a zip")
        self.assertGreater(len(payload), 12_000_000)

    def test_an_import_stops_when_its_disk_is_short_and_goes_on_when_run_again(self):
        """tools/cmd_import.cc: an import stops with a clear error before it would leave less than
        --disk-reserve free (or at the first batch the archive could not commit, with no reserve),
        instead of failing every message after it; run again with room, it archives the rest and
        counts what it had as duplicates, and the archive verifies. Before, an import on a full disk
        went on through the whole mailbox, each message an I/O error (18,453 of the 21,903 Enron
        messages on a 6 MiB archive)."""
        import base64
        import random
        rnd = random.Random(7)
        box = scratch("mailark-box-")
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(box, sub))
        # About 4 KB each, incompressible: 18 MB in all. The 6 MiB archive takes about 1,300; with no
        # reserve, what is on its way when the first batch fails (the pipeline's queues: about 1,400
        # here) fails too, and the rest must be left unread: 3,000 were all read once in a CI run.
        count = 4500
        for i in range(count):
            body = base64.encodebytes(rnd.randbytes(3000)).decode().replace("\n", "\r\n")
            with open(os.path.join(box, "cur", f"{1700000000 + i}.{i}.host:2,S"), "w", newline="") as f:
                f.write(f"From: someone@outside.example\r\nTo: ana@example.com\r\nSubject: import {i}\r\n"
                        f"Message-ID: <import-{i}@x>\r\nDate: Sun, 29 Nov 2026 10:00:00 +0000\r\n\r\n{body}")

        def run(data, *args):
            p = subprocess.run([BIN, "--data", data, "import", "--no-scan", "--json", *args, box],
                               capture_output=True, timeout=300)
            return p.returncode, json.loads(p.stdout or b"{}"), p.stderr.decode()

        for reserve in (1 << 20, 0):
            data = scratch("mailark-data-")
            disk = self.tmpfs(os.path.join(data, "archive"), "6m")
            rc, out, err = run(data, "--disk-reserve", str(reserve))
            self.assertNotEqual(rc, 0, out)
            self.assertIn("import stopped:", err)
            self.assertIn("run the same import again", err)
            self.assertIn("stopped", out)
            first = out["imported"]
            self.assertGreater(first, 0)
            self.assertLess(out["messages"], count, "nothing more was read once it stopped")
            if reserve:
                self.assertIn("--disk-reserve", err)
                self.assertEqual(out["errors"], 0, "stopped before the disk was full: nothing failed")
                st = os.statvfs(disk.path)
                self.assertGreaterEqual(st.f_bavail * st.f_frsize, reserve - (1 << 20))
            else:
                self.assertIn("could not record a batch", err)
                self.assertLess(out["errors"], count - first, "only what was on its way failed")
            subprocess.run(["mount", "-o", "remount,size=256m", disk.path], check=True)  # the default reserve: 128 MiB
            rc, again, err = run(data)
            self.assertEqual(rc, 0, err)
            self.assertEqual((again["imported"], again["duplicates"]), (count - first, first))
            verified = json.loads(subprocess.run([BIN, "--data", data, "verify", "--json"], capture_output=True,
                                                 timeout=120).stdout)
            self.assertTrue(verified["intact"])
            self.assertEqual(verified["records_checked"], count)

    def index_disk_filled(self, subject):
        """A server whose index is on an 8 MiB tmpfs: one message indexed, then the tmpfs filled and
        ten messages `subject` N sent, each answered 250, the index failure logged. Returns (port,
        server, tmpfs)."""
        port = free_port()
        data = scratch("mailark-data-")
        disk = self.tmpfs(os.path.join(data, "index"), "8m")
        srv = self.server(config(port), data=data).start()
        self.assertEqual(send(port, "indexed first")[0], 250)
        srv.wait_for("subject:indexed")
        disk.fill()
        for i in range(10):
            self.assertEqual(send(port, f"{subject} {i}")[0], 250, "the archive is the truth")
        self.until(lambda: "index shard" in srv.server_log(), "the index failure being logged", srv)
        # Refused before Xapian wrote into the full disk (limits.index_min_free_bytes, a sixteenth of
        # these 8 MiB): a commit that meets a full disk can end the whole server (IndexRoom.*).
        self.assertIn("is always left free", srv.server_log())
        self.assertNotIn("No space left on device", srv.server_log())
        return port, srv, disk

    def test_a_web_view_whose_audit_entry_cannot_be_written_shows_nothing(self):
        """The portal's audit (api/web/portal.cc audit_as) fails closed: while the audit log's disk is
        full, a search answers 503 naming the audit log and shows no message; every search answered
        200 before that was written to the log; mail goes on; once there is room, searches work again."""
        from test_web import Client
        port, web_port = free_port(), free_port()
        data = scratch("mailark-data-")
        disk = self.tmpfs(os.path.join(data, "cases"), "1m")
        srv = self.server(config(port, extra=f'[web]\nlisten = "127.0.0.1:{web_port}"\n'), data=data)
        srv.add_user("ana@example.com", "ana-pw")
        srv.start()
        self.assertEqual(send(port, "audited words")[0], 250)
        ana = Client(web_port)
        self.assertEqual(ana.login("ana@example.com", "ana-pw")[0], 200)
        self.until(lambda: ana.get("/api/v1/search?q=audited")[1].get("total") == 1, "the message in ana's search", srv)

        def searches_logged():
            log = srv.cli("audit", "list", "--limit", "1000000")
            return sum(1 for e in log if e["actor"] == "web:ana@example.com" and e["action"] == "search")

        before = searches_logged()
        disk.fill()
        shown, refused = 0, None
        for _ in range(3000):  # the log's file grows a page at a time: some searches still find room
            status, body = ana.get("/api/v1/search?q=audited")
            if status != 200:
                refused = (status, body)
                break
            self.assertEqual(body["total"], 1)
            shown += 1
        self.assertIsNotNone(refused, "searches went on being shown with the audit log's disk full")
        status, body = refused
        self.assertEqual(status, 503, body)
        self.assertEqual(set(body), {"error"}, "nothing of the search is shown")
        self.assertIn("cannot write the audit log", body["error"])
        self.assertEqual(send(port, "mail goes on")[0], 250, "the audit log's disk is not the mail's")
        disk.free()
        status, body = ana.get("/api/v1/search?q=audited")
        self.assertEqual((status, body.get("total")), (200, 1), "searches again once there is room")
        self.assertEqual(searches_logged(), before + shown + 1, "every search shown is in the log, the refused one is not")

    def test_index_disk_full_never_refuses_mail(self):
        port, srv, disk = self.index_disk_filled("unindexed mail")
        p = srv.run("search", "subject:unindexed")
        self.assertEqual(p.returncode, 0)
        disk.free()
        self.assertEqual(srv.wait_for("subject:unindexed", 10)["total"], 10, "caught up from the archive")
        self.until(lambda: "recovered" in srv.server_log(), "the recovery being logged", srv)

    def test_server_starts_with_its_index_behind_and_its_disk_full(self):
        # A server stopped while its index could not be written starts again with the same full disk:
        # its door opens at once and takes mail, and the index catches up from the archive once there
        # is room (the index never keeps mail out; engine/ingest.cc index_loop).
        port, srv, disk = self.index_disk_filled("behind mail")
        self.assertEqual(srv.stop(), 0)
        self.assertEqual(srv.search("subject:behind")["total"], 0, "stopped with its index behind the archive")
        srv.start()
        self.until(lambda: "catching up from the archive while mail is taken" in srv.server_log(),
                   "the start behind the archive being logged", srv)
        self.assertEqual(send(port, "behind mail after the start")[0], 250, "the door is open while the index lags")
        self.assertEqual(srv.search("subject:behind")["total"], 0, "the index's disk is still full")
        disk.free()
        self.assertEqual(srv.wait_for("subject:behind", 11)["total"], 11, "caught up from the archive")
        self.assertEqual(srv.search("subject:indexed")["total"], 1)
        self.until(lambda: "recovered, caught up to message" in srv.server_log(), "the recovery being logged", srv)

    def test_an_import_with_its_index_disk_full_archives_everything(self):
        """A lone import whose index cannot be written (its disk full) archives every message all the
        same, says the index is behind and why, and is not refused by an index that is behind when it
        starts; once there is room, the index catches up from the archive."""
        def mbox(tag, n):
            path = os.path.join(scratch("mailark-box-"), tag + ".mbox")
            with open(path, "w", newline="") as f:
                for i in range(n):
                    f.write(f"From someone@outside.example Sun Nov 29 10:00:00 2026\nFrom: someone@outside.example\n"
                            f"To: ana@example.com\nSubject: {tag} {i}\nMessage-ID: <{tag}-{i}@x>\n"
                            f"Date: Sun, 29 Nov 2026 10:00:00 +0000\n\nmessage {i} of {tag}\n\n")
            return path

        def run(*args):
            p = subprocess.run([BIN, "--data", data, *args], capture_output=True, timeout=300)
            return p.returncode, json.loads(p.stdout or b"{}"), p.stderr.decode()

        data = scratch("mailark-data-")
        disk = self.tmpfs(os.path.join(data, "index"), "8m")
        rc, out, err = run("import", "--json", mbox("before", 50))
        self.assertEqual(rc, 0, err)
        self.assertEqual(out["index_watermark"], out["archive_head"])
        disk.fill()
        rc, out, err = run("import", "--json", mbox("whilefull", 200))
        self.assertEqual(rc, 0, err)
        self.assertEqual((out["imported"], out["errors"]), (200, 0), "the archive is the truth")
        self.assertLess(out["index_watermark"], out["archive_head"])
        self.assertIn("is always left free", err, "the import says why the index is behind")
        self.assertNotIn("No space left on device", err, "nothing was written into the full disk")
        # The index is behind when the next import starts, and still cannot be written.
        rc, out, err = run("import", "--json", mbox("stillfull", 20))
        self.assertEqual(rc, 0, err)
        self.assertEqual(out["imported"], 20, "an index that cannot catch up does not keep mail out")
        self.assertEqual(out["archive_head"], 270)
        rc, res, err = run("search", "--json", "subject:whilefull")
        self.assertEqual(rc, 0, err)
        self.assertEqual(res["total"], 0)
        self.assertGreater(res["index_lag"], 0, "the search says the index lags")
        disk.free()
        rc, res, err = run("search", "--json", "subject:whilefull OR subject:stillfull")
        self.assertEqual(rc, 0, err)
        self.assertEqual((res["total"], res["index_lag"]), (220, 0), "caught up from the archive")

    def test_reindex_and_compaction_of_an_index_on_a_disk_of_its_own(self):
        """An index on a disk of its own (mounted on DATA/index) cannot be renamed: an import's compaction
        compacts its shards in place (indexer::compact_shards_in_place; it was once left as written),
        and reindex rebuilds it in place, keeping its pair words, and leaves nothing on the data
        folder's disk (it once built the whole index beside it and failed only at the swap, EBUSY,
        leaving two copies behind)."""
        data = scratch("mailark-data-")
        self.tmpfs(os.path.join(data, "index"), "64m")
        box = os.path.join(scratch("mailark-box-"), "gas.mbox")
        with open(box, "w", newline="") as f:
            for i in range(1200):
                f.write(f"From someone@outside.example Sun Nov 29 10:00:00 2026\nFrom: someone@outside.example\n"
                        f"To: ana@example.com\nSubject: report {i}\nMessage-ID: <gas-{i}@x>\n"
                        f"Date: Sun, 29 Nov 2026 10:00:00 +0000\n\nthe natural gas price of the day is {i}, "
                        f"please let me know what you think of it\n\n")

        def run(*args):
            p = subprocess.run([BIN, "--data", data, *args], capture_output=True, timeout=300)
            return p.returncode, p.stdout.decode(), p.stderr.decode()

        rc, out, err = run("import", "--json", box)
        self.assertEqual(rc, 0, err)
        self.assertEqual(err.strip(), "", "compacted without a word (it once said 'not compacted')")
        # Its shards were compacted in place, so it is as small as the index of the same import on the
        # data folder's disk, which is compacted beside itself and swapped in (uncompacted: 1.5x here).
        plain = scratch("mailark-data-")
        p = subprocess.run([BIN, "--data", plain, "import", box], capture_output=True, timeout=300)
        self.assertEqual(p.returncode, 0, p.stderr)

        def index_bytes(d):
            return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(os.path.join(d, "index")) for f in fs)

        self.assertLess(index_bytes(data), 1.1 * index_bytes(plain))
        self.assertEqual(sorted(os.listdir(os.path.join(data, "index"))),
                         sorted(os.listdir(os.path.join(plain, "index"))), "no copy left beside the shards")
        words = os.path.join(data, "index", "pair-words")
        with open(words) as f:
            chosen = f.read()
        self.assertIn("natural", chosen.split())
        os.makedirs(os.path.join(data, "index.new", "shard0"))  # what the build before this one left
        rc, out, err = run("reindex", "--json")
        self.assertEqual(rc, 0, err)
        res = json.loads(out)
        self.assertEqual((res["indexed"], res["index_watermark"], res["in_place"]), (1200, 1200, True))
        self.assertEqual(sorted(os.listdir(data)), ["archive", "index", "lock"], "nothing left beside the index")
        with open(words) as f:
            self.assertEqual(f.read(), chosen, "the pair words are kept")
        rc, out, err = run("search", "--json", '"natural gas"')
        self.assertEqual(rc, 0, err)
        res = json.loads(out)
        self.assertEqual((res["total"], res["total_exact"], res["index_lag"]), (1200, True, 0))
        rc, out, err = run("search", "--json", "subject:report")
        self.assertEqual(json.loads(out)["total"], 1200)

    def test_full_scanner_folder_answers_451_never_clean(self):
        port = free_port()
        scan_root = scratch("mailark-scan-")
        folder = self.tmpfs(os.path.join(scan_root, "tmp"), "64m")
        srv = self.server(config(port, extra=f'[scanner]\ntemp_dir = "{folder.path}"\n[limits]\nscan_bytes = 8388608\n')).start()
        self.assertEqual(send(port, "scanned before")[0], 250)
        folder.fill()
        code, text = send(port, "while the scanner cannot work")
        self.assertEqual(code, 451, text)
        self.assertIn("4.7.1", text)
        folder.free()
        self.assertEqual(send(port, "scanned after")[0], 250)
        res = srv.wait_for("subject:scanned", 2)
        self.assertEqual({r["verdict"] for r in res["results"]}, {"clean"})
        self.assertEqual(srv.search("subject:cannot")["total"], 0)

    def test_message_at_the_configured_maximum_reads_back(self):
        # Above the 80 MiB the archive reader once allowed, whatever was configured.
        limit = 90 * 1024 * 1024
        port = free_port()
        srv = self.server(config(port, extra=f"[limits]\nmessage_bytes = {limit}\nline_bytes = 2000\n")).start()
        head = b"From: big@outside.example\r\nTo: ana@example.com\r\nSubject: at the limit\r\n\r\n"
        line = b"x" * 998 + b"\r\n"
        body = line * ((limit - len(head)) // len(line))
        msg = head + body + b"y" * (limit - len(head) - len(body) - 2) + b"\r\n"
        self.assertEqual(len(msg), limit)
        s = smtplib.SMTP("127.0.0.1", port, timeout=300)
        s.sendmail("big@outside.example", ["ana@example.com"], msg)
        with self.assertRaises((smtplib.SMTPSenderRefused, smtplib.SMTPDataError)) as too_big:
            s.sendmail("big@outside.example", ["ana@example.com"], msg + b"z\r\n")
        self.assertEqual(too_big.exception.smtp_code, 552, "one byte more is refused (at MAIL, by its SIZE)")
        s.quit()
        ident = srv.wait_for('subject:"at the limit"')["results"][0]["id"]
        raw = srv.run("show", str(ident), "--raw", timeout=300)
        self.assertEqual(raw.returncode, 0, raw.stderr)
        self.assertTrue(raw.stdout.endswith(msg), "the stored bytes are the message, after the Received header")
        self.assertEqual(srv.cli("show", str(ident))["verdict"], "clean", "scanned whole: the scan limits follow")

    @unittest.skipUnless(os.path.exists(SINK), "needs Postfix's smtp-sink")
    def test_unscannable_mail_follows_its_policy_and_is_released_by_an_administrator(self):
        port, primary = free_port(), free_port()
        sink_dir = os.path.join(scratch("sink-"), "d")
        self.sinks.append(Sink(primary, sink_dir))
        srv = self.server(config(port, primary=primary)).start()
        locked = ("locked.zip", encrypted_zip())
        code, text = send(port, "policy reject", attachment=locked)
        self.assertEqual(code, 554, text)
        self.assertIn("5.7.1 Message rejected: it cannot be scanned (encrypted:", text)

        def reload(policy):
            with open(srv.config) as f:
                text = f.read()
            with open(srv.config, "w") as f:
                f.write(text.replace('verify_recipients = "none"', f'verify_recipients = "none"\nunscannable = "{policy}"', 1)
                        if "unscannable" not in text else
                        text.replace(text[text.index('unscannable = "'):text.index('"', text.index('unscannable = "') + 15) + 1],
                                     f'unscannable = "{policy}"'))
            srv.proc.send_signal(signal.SIGHUP)
            self.until(lambda: srv.server_log().count("reload: virus signatures reloaded") >= reload.count + 1,
                       "the reload", srv)
            reload.count += 1

        reload.count = 0
        reload("quarantine")
        self.assertEqual(send(port, "policy quarantine", attachment=locked)[0], 250)
        held = srv.cli("quarantine")["entries"]
        self.assertEqual(len(held), 2)
        self.assertEqual([e["refused_at_smtp"] for e in held], [True, False])
        self.assertTrue(all(e["reason"].startswith("encrypted: ") for e in held))
        time.sleep(1.5)
        self.assertEqual(Sink.messages(self.sinks[0]), [], "nothing held was delivered")
        released = srv.cli("quarantine", "release", str(held[1]["id"]), "--by", "tester")
        self.assertEqual(released["failed"], 0)
        self.assertEqual(released["decisions"], [{"id": held[1]["id"], "recipients": held[1]["recipients"],
                                                  "queued": True}])
        self.until(lambda: any(b"policy.quarantine" in m for m in self.sinks[0].messages()), "delivery of the release", srv)
        decided = {e["id"]: e for e in srv.cli("quarantine", "list", "--all")["entries"]}
        self.assertEqual(decided[held[1]["id"]]["status"], "released")
        self.assertEqual(decided[held[1]["id"]]["decided_by"], "tester")
        self.assertEqual(srv.cli("quarantine")["total"], 1)
        shown = srv.cli("show", str(held[1]["id"]))
        self.assertEqual(shown["verdict"], "unscannable")
        self.assertEqual(shown["quarantine"]["status"], "released")
        again = srv.run("quarantine", "release", str(held[1]["id"]))
        self.assertNotEqual(again.returncode, 0, "a decision is made once")

        reload("deliver")
        self.assertEqual(send(port, "policy deliver", attachment=locked)[0], 250)
        self.until(lambda: any(b"policy.deliver" in m for m in self.sinks[0].messages()), "delivery", srv)
        self.assertEqual(srv.wait_for("verdict:unscannable", 3)["total"], 3)
        self.assertEqual(srv.cli("stats")["unscannable"], 3)

    def test_unscannable_mail_without_a_primary_is_refused_held_and_released_to_the_mailbox(self):
        # A server without a primary (the embedded default) keeps inbound mail for its mailbox views.
        # What the scan cannot vouch for was answered 250, placed in no folder and listed nowhere, so
        # no administrator could release it: now it gets the policy's 554, a quarantine entry, and a
        # release puts it in the recipient's INBOX.
        port, imap = free_port(), free_port()
        srv = self.server(config(port, extra=f'[[listener]]\nname = "imap"\nrole = "imap"\nport = {imap}\n'
                                             'tls = "none"\n')).start()
        added = subprocess.run([BIN, "--data", srv.data, "user", "add", "ana@example.com", "--password-stdin"],
                               input=b"ana-pw\n", capture_output=True, timeout=60)
        self.assertEqual(added.returncode, 0, added.stderr)
        self.assertEqual(send(port, "plain and clean")[0], 250)
        code, text = send(port, "locked away", attachment=("locked.zip", encrypted_zip()))
        self.assertEqual(code, 554, text)
        self.assertIn("5.7.1 Message rejected: it cannot be scanned (encrypted:", text)
        held = srv.cli("quarantine")["entries"]
        self.assertEqual(len(held), 1, held)
        self.assertEqual(held[0]["recipients"], ["ana@example.com"])

        def inbox():
            m = imaplib.IMAP4("127.0.0.1", imap)
            m.login("ana@example.com", "ana-pw")
            typ, exists = m.select("INBOX", readonly=True)
            if exists == [b"0"]:
                m.logout()
                return []
            typ, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            m.logout()
            return sorted(d[1].decode().strip() for d in data if isinstance(d, tuple))

        self.until(lambda: inbox() == ["Subject: plain and clean"], "the clean message in INBOX", srv)
        released = srv.run("quarantine", "release", str(held[0]["id"]), "--by", "tester")
        self.assertEqual(released.returncode, 0, released.stderr)
        # Placed now, or by the server's follower if it has not reached the held message yet (the
        # release is committed first, so it does; Mailbox.AReleaseRacingTheFollowerIsPlacedOnce).
        self.assertRegex(released.stdout.decode(), r"^released \d+ to the mailboxes of ana@example\.com "
                         r"\((1 placed|placed as the mailbox views reach it)\) \(by tester\)\n$")
        self.until(lambda: inbox() == ["Subject: locked away", "Subject: plain and clean"], "the release in INBOX", srv)
        self.assertEqual(srv.cli("queue")["entries"], [], "released to the mailbox, queued for no one")
        self.assertEqual(srv.cli("quarantine", "list", "--all")["entries"][0]["status"], "released")
        # The same in --json: queued for no one, placed now (1) or by the follower (null).
        code, text = send(port, "locked again", attachment=("locked.zip", encrypted_zip()))
        self.assertEqual(code, 554, text)
        again = [e for e in srv.cli("quarantine")["entries"] if e["status"] == "held"]
        self.assertEqual(len(again), 1, again)
        released = srv.cli("quarantine", "release", str(again[0]["id"]), "--by", "tester")
        self.assertEqual(released["failed"], 0)
        self.assertEqual(len(released["decisions"]), 1, released)
        decision = released["decisions"][0]
        self.assertEqual((decision["id"], decision["recipients"], decision["queued"]),
                         (again[0]["id"], ["ana@example.com"], False))
        self.assertIn(decision["placed"], (1, None))
        self.until(lambda: inbox() == ["Subject: locked again", "Subject: locked away", "Subject: plain and clean"],
                   "the second release in INBOX", srv)

    def test_outbound_listener_refuses_a_foreign_client_before_tls(self):
        port = free_port()
        srv = self.server(f"""
[[listener]]
name = "from-primary"
role = "outbound"
port = {port}
tls = "implicit"
[outbound]
networks = ["10.99.0.0/16"]
""").start()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.settimeout(10)
            # The server closes without a word: no TLS handshake for a client that may not relay.
            self.assertEqual(raw.recv(100), b"")
        with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
            with insecure_tls().wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10)) as tls:
                tls.recv(100)
        self.assertIn("refused: not in outbound.networks", srv.server_log())

    def test_session_has_an_overall_deadline(self):
        port = free_port()
        srv = self.server(config(port, extra="[limits]\nsession_timeout = 2\ncommand_timeout = 60\n")).start()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            read_replies(sock, 1)
            codes = []
            started = time.time()
            while time.time() - started < 10 and "421" not in codes:
                try:
                    sock.sendall(b"NOOP\r\n")
                except OSError:
                    break
                got, _ = read_replies(sock, 1, timeout=2)
                codes += got
                time.sleep(0.3)
        self.assertIn("421", codes, "a busy session still ends at its deadline")
        self.assertIn("session time limit", srv.server_log())

    def test_an_imap_client_that_never_logs_in_is_cut_off(self):
        """api/imap/server.cc: a connection not logged in by imap.login_timeout (2 s here) gets
        "* BYE login time limit" however busy it keeps (a NOOP every 0.3 s, each within the minute of
        silence a client before login has), where it was served for as long as it sent; a client that
        logs in is not cut off at that time."""
        port, imap = free_port(), free_port()
        srv = self.server(config(port, extra=f"""[imap]
login_timeout = 2
[[listener]]
role = "imap"
port = {imap}
tls = "none"
""")).start()
        srv.add_user("ana@example.com", "pw")
        user = imaplib.IMAP4("127.0.0.1", imap, timeout=10)
        user.login("ana@example.com", "pw")
        with socket.create_connection(("127.0.0.1", imap), timeout=10) as sock:
            f = sock.makefile("rb")
            self.assertTrue(f.readline().startswith(b"* OK"))
            got, started, n = b"", time.time(), 0
            while time.time() - started < 20 and b"* BYE" not in got:
                n += 1
                try:
                    sock.sendall(b"a%d NOOP\r\n" % n)
                except OSError:
                    break
                line = f.readline()
                if not line:
                    break
                got += line
                time.sleep(0.3)
        self.assertIn(b"* BYE login time limit", got)
        self.assertIn("imap.login_timeout", srv.server_log())
        time.sleep(0.5)  # past the time limit for the logged-in session as well
        self.assertEqual(user.noop()[0], "OK", "a logged-in session is not cut off")
        user.logout()

    def test_one_writer_per_data_folder(self):
        port = free_port()
        srv = self.server(config(port)).start()
        self.assertEqual(send(port, "beside the server")[0], 250)
        srv.wait_for("subject:beside")
        # reindex writes the index the server writes (an import is handed to the server instead:
        # test_import_handoff.py).
        p = srv.run("reindex")
        self.assertEqual(p.returncode, 5, p.stderr)
        self.assertIn(b"is in use by `mailark serve` (pid", p.stderr)
        self.assertIn(b"stop it first (`mailark serve` stops cleanly on SIGTERM", p.stderr)  # what to do
        for args in (["search", "subject:beside"], ["show", "1"], ["verify"], ["stats"], ["queue"], ["quarantine"]):
            q = srv.run(*args, "--json")
            self.assertEqual(q.returncode, 0, (args, q.stderr))

    def test_dead_scan_processes_cost_the_server_nothing(self):
        # scanner/scan_host.h: libclamav runs in processes forked by mailark-scan, never in the server.
        def processes():
            out = {}
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        stat = f.read()
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        argv0 = f.read().split(b"\0")[0].decode(errors="replace")
                except OSError:
                    continue
                fields = stat[stat.rfind(")") + 2:].split()
                if fields[0] != "Z":
                    out[int(pid)] = (int(fields[1]), argv0)
            return out

        def host_and_children():
            ps = processes()
            hosts = [p for p, (ppid, argv0) in ps.items() if ppid == srv.proc.pid and argv0.endswith("mailark-scan")]
            self.assertEqual(len(hosts), 1, ps)
            return hosts[0], [p for p, (ppid, _) in ps.items() if ppid == hosts[0]]

        port = free_port()
        srv = self.server(config(port, extra='[scanner]\nisolation = "process"\n')).start()
        self.assertEqual(send(port, "scanned first")[0], 250)
        host, children = host_and_children()
        self.assertTrue(children, "a scan ran in a scan process")
        for child in children:
            os.kill(child, signal.SIGKILL)
        code, text = send(port, "scanned by a new child")
        self.assertEqual(code, 250, text)
        host, children = host_and_children()
        os.kill(host, signal.SIGKILL)
        # Its scan processes die with it (PR_SET_PDEATHSIG), a moment later: one still alive would
        # scan the next message.
        self.until(lambda: not ({host, *children} & set(processes())), "the scan processes' end", srv)
        code, text = send(port, "while no scan process is left")
        self.assertEqual(code, 451, text)
        self.assertIn("4.7.1", text)
        srv.proc.send_signal(signal.SIGHUP)
        self.until(lambda: "reload: virus signatures reloaded" in srv.server_log(), "the reload", srv)
        new_host, _ = host_and_children()
        self.assertNotEqual(new_host, host)
        code, text = send(port, "scanned after the reload")
        self.assertEqual(code, 250, text)
        res = srv.wait_for("subject:scanned", 3)
        self.assertEqual({r["verdict"] for r in res["results"]}, {"clean"})
        self.assertEqual(srv.search("subject:while")["total"], 0, "the 451 message was not taken")

    def test_reload_under_load_drops_nothing(self):
        port = free_port()
        srv = self.server(config(port, extra="[limits]\nsessions_per_ip = 64\n")).start()
        codes = []
        lock = threading.Lock()

        def client(n):
            s = smtplib.SMTP("127.0.0.1", port, timeout=60)
            for i in range(15):
                try:
                    s.sendmail("someone@outside.example", ["ana@example.com"],
                               f"Subject: load {n} {i}\r\n\r\nx\r\n")
                    code = 250
                except smtplib.SMTPException as e:
                    code = getattr(e, "smtp_code", 0)
                with lock:
                    codes.append(code)
            s.quit()

        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for _ in range(5):
            srv.proc.send_signal(signal.SIGHUP)
            time.sleep(0.2)
        for t in threads:
            t.join()
        self.assertEqual(codes, [250] * 120)
        self.assertEqual(srv.wait_for("subject:load", 120)["total"], 120)


if __name__ == "__main__":
    unittest.main()
