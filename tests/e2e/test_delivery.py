"""Delivery to the primary server, end to end: `mailark serve` delivers to Postfix's smtp-sink (a real
Postfix test server) started by the tests on loopback; stopping the sink makes mail wait, starting it
again delivers everything. A permanent refusal of outbound mail bounces with one DSN to the (internal)
sender; inbound mail is never bounced to its outside sender: unknown recipients are refused at RCPT
time, and what the primary still refuses later is kept in the queue for the administrator.
"""
import json
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
import unittest

BIN = os.environ.get("MAILARK_BIN", "mailark")
SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


from harness import free_port, scratch  # noqa: E402  (below the ephemeral port range)


def wait_port(port, proc, what, address="127.0.0.1", log_path=None):
    """Waits until every port in `port` (one port or several) accepts connections while `proc` runs.
    A server binds its listeners one after another and exits if a later one fails, so waiting on the
    first alone could return just before it exits (seen once in CI: the submission port refused)."""
    ports = port if isinstance(port, (list, tuple)) else [port]
    deadline = time.time() + 30
    pending = list(ports)
    while pending:
        try:
            socket.create_connection((address, pending[0]), timeout=1).close()
            pending.pop(0)
            continue
        except OSError:
            pass
        if time.time() > deadline or (proc and proc.poll() is not None):
            log = ""
            if log_path:
                with open(log_path, "rb") as f:
                    log = "; its log:\n" + f.read().decode(errors="replace")[-3000:]
            raise RuntimeError(f"{what} did not start on port {pending[0]}{log}")
        time.sleep(0.1)
    if proc and proc.poll() is not None:
        raise RuntimeError(f"{what} exited after binding {ports}")


class Sink:
    """Postfix's smtp-sink, dumping each transaction to a file in `folder`."""

    def __init__(self, port, folder, reject=None, address="127.0.0.1"):
        self.port, self.folder = port, folder
        os.makedirs(folder, exist_ok=True)
        # smtp-sink drops to `nobody` when started as root: it must reach and write the folder.
        os.chmod(os.path.dirname(folder), 0o755)
        os.chmod(folder, 0o777)
        cmd = [SINK]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]
        if reject:
            cmd += ["-f", reject]
        cmd += ["-d", os.path.join(folder, "%Y%m%d%H%M%S."), f"{address}:{port}", "20"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(port, self.proc, "smtp-sink", address)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def messages(self):
        out = []
        for name in sorted(os.listdir(self.folder)):
            with open(os.path.join(self.folder, name), "rb") as f:
                out.append(f.read())
        return out


@unittest.skipUnless(os.path.exists(SINK), "Postfix's smtp-sink is not installed (bash scripts/setup.sh)")
class DeliveryTest(unittest.TestCase):
    def start_server(self, primary_port, smarthost_port=None, extra="", verify="none"):
        self.tmp = tempfile.mkdtemp(prefix="mailark-delivery-")
        self.data = os.path.join(self.tmp, "data")
        self.mx, self.submission = free_port(), free_port()
        cfg = os.path.join(self.tmp, "mailark.toml")
        with open(cfg, "w") as f:
            f.write(f"""
[server]
hostname = "mx.test.example"
[[listener]]
role = "inbound"
port = {self.mx}
tls = "none"
[[listener]]
role = "outbound"
port = {self.submission}
tls = "none"
[inbound]
domains = ["example.com"]
verify_recipients = "{verify}"
[delivery]
primary = ["127.0.0.1:{primary_port}"]
smarthost = ["127.0.0.1:{smarthost_port or free_port()}"]  # without one: a dead port, so mail waits
retry_schedule = [1]
{extra}
""")
        self.log_path = os.path.join(self.tmp, "serve.log")
        self.log = open(self.log_path, "wb")
        self.server = subprocess.Popen([BIN, "--data", self.data, "serve", "--config", cfg], stdout=self.log,
                                       stderr=subprocess.STDOUT)
        wait_port((self.mx, self.submission), self.server, "mailark serve", log_path=self.log_path)

    def tearDown(self):
        if getattr(self, "server", None) and self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            self.assertEqual(self.server.wait(timeout=30), 0)
        for sink in getattr(self, "sinks", []):
            if sink.proc.poll() is None:
                sink.stop()
        if getattr(self, "log", None):
            self.log.close()
        shutil.rmtree(getattr(self, "tmp", ""), ignore_errors=True)

    def cli(self, *args):
        p = subprocess.run([BIN, "--data", self.data, *args, "--json"], capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        return json.loads(p.stdout)

    def send(self, message_id, sender="alice@sender.example", rcpts=("bob@example.com",), outbound=False):
        s = smtplib.SMTP("127.0.0.1", self.submission if outbound else self.mx, timeout=10)
        s.sendmail(sender, list(rcpts),
                   f"Subject: {message_id}\r\nMessage-ID: <{message_id}>\r\n\r\n.a line starting with a dot\r\nbody\r\n")
        s.quit()

    def until(self, condition, what, seconds=30):
        deadline = time.time() + seconds
        while not condition():
            if time.time() > deadline:
                with open(self.log_path, "rb") as f:
                    self.fail(f"{what} did not happen; server log:\n{f.read().decode(errors='replace')[-3000:]}")
            time.sleep(0.2)

    def test_inbound_mail_reaches_the_primary(self):
        port = free_port()
        self.sinks = [Sink(port, os.path.join(scratch("sink-"), "d"))]
        self.start_server(port)
        self.send("first@sender.example")
        self.until(lambda: any(b"first@sender.example" in m for m in self.sinks[0].messages()), "delivery")
        delivered = [m for m in self.sinks[0].messages() if b"first@sender.example" in m][0]
        self.assertIn(b"\r\n.a line starting with a dot\r\n", delivered.replace(b"\n", b"\r\n").replace(b"\r\r", b"\r"))
        self.assertIn(b"by mx.test.example (mailark)", delivered)
        self.until(lambda: self.cli("queue")["total"] == 0, "the queue emptying")
        with open(self.log_path) as f:
            self.assertRegex(f.read(), r"\d+: delivered to=<bob@example.com> relay=127.0.0.1:\d+ attempts=1")

    def test_outbound_mail_goes_through_the_smarthost(self):
        primary, smarthost = free_port(), free_port()
        self.sinks = [Sink(smarthost, os.path.join(scratch("sink-"), "d"))]
        self.start_server(primary, smarthost_port=smarthost)
        s = smtplib.SMTP("127.0.0.1", self.submission, timeout=10)
        s.sendmail("ana@example.com", ["partner@remote.example", "other@elsewhere.example"],
                   "Subject: out\r\nMessage-ID: <out@example.com>\r\n\r\nhello\r\n")
        s.quit()
        self.until(lambda: any(b"<out@example.com>" in m for m in self.sinks[0].messages()), "delivery to the smarthost")
        self.until(lambda: self.cli("queue")["total"] == 0, "the queue emptying")
        dump = [m for m in self.sinks[0].messages() if b"<out@example.com>" in m][0]
        self.assertEqual(dump.count(b"<out@example.com>"), 1, "one transaction for both recipients")

    def test_internationalised_address_is_kept_where_the_primary_lacks_smtputf8(self):
        port = free_port()
        self.sinks = [Sink(port, os.path.join(scratch("sink-"), "d"))]  # no SMTPUTF8
        self.start_server(port)
        s = smtplib.SMTP("127.0.0.1", self.mx, timeout=10)
        s.ehlo("x")
        s.sendmail("josé@sender.example", ["bob@example.com"],
                   "Subject: utf8\r\nMessage-ID: <utf8@sender.example>\r\n\r\nhola\r\n".encode(),
                   mail_options=["SMTPUTF8"])
        s.quit()
        self.until(lambda: self.cli("queue")["total"] == 1 and
                   self.cli("queue")["entries"][0]["recipients"][0]["state"] == "kept",
                   "the message kept for the administrator")
        entry = self.cli("queue")["entries"][0]
        self.assertIn("5.6.7", entry["recipients"][0]["last_response"])
        self.assertEqual(self.sinks[0].messages(), [], "nothing was relayed without SMTPUTF8")
        self.assertEqual(self.cli("search", 'subject:"Undelivered Mail"')["total"], 0, "no DSN to an outside sender")

    def test_outbound_recipient_bounces_when_the_queue_lifetime_ends(self):
        self.start_server(free_port(), extra="queue_lifetime = 3")  # the smarthost never answers
        self.send("expires@example.com", sender="alice@example.com", rcpts=("partner@remote.example",), outbound=True)
        self.until(lambda: self.cli("search", 'subject:"Undelivered Mail Returned to Sender"')["total"] == 1,
                   "a DSN after the queue lifetime", seconds=60)
        with open(self.log_path) as f:
            log = f.read()
        self.assertIn("deferred to=<partner@remote.example>", log)
        self.assertIn("bounced to=<partner@remote.example>", log)
        self.assertIn("delivery time expired", log)

    def test_inbound_recipient_is_kept_not_bounced_when_the_queue_lifetime_ends(self):
        self.start_server(free_port(), extra="queue_lifetime = 3")  # the primary never answers
        self.send("kept@sender.example", sender="alice@sender.example")
        self.until(lambda: self.cli("queue")["entries"][0]["recipients"][0]["state"] == "kept",
                   "the message kept after the queue lifetime", seconds=60)
        time.sleep(1.5)
        self.assertEqual(self.cli("search", 'subject:"Undelivered Mail"')["total"], 0, "no backscatter")
        self.assertEqual(self.cli("queue")["total"], 1)

    def test_required_tls_defers_when_the_primary_offers_none(self):
        port = free_port()
        self.sinks = [Sink(port, os.path.join(scratch("sink-"), "d"))]  # no STARTTLS
        self.start_server(port, extra='tls = "required"')
        self.send("needs-tls@sender.example")
        self.until(lambda: self.cli("queue")["total"] == 1 and
                   "STARTTLS" in self.cli("queue")["entries"][0]["recipients"][0]["last_response"],
                   "deferral for want of TLS")
        self.assertEqual(self.sinks[0].messages(), [], "nothing was sent in the clear")

    def test_mail_waits_while_the_primary_is_down_and_arrives_when_it_is_back(self):
        port = free_port()
        folder = os.path.join(scratch("sink-"), "d")
        self.start_server(port)  # the primary is down
        for i in range(5):
            self.send(f"waiting-{i}@sender.example")

        def deferred_everywhere():
            q = self.cli("queue")
            return q["total"] == 5 and all(e["recipients"][0]["attempts"] >= 1 for e in q["entries"])

        self.until(deferred_everywhere, "deferral of the 5 messages")
        entry = self.cli("queue")["entries"][0]
        self.assertEqual(entry["recipients"][0]["state"], "pending")
        self.assertIn("127.0.0.1", entry["recipients"][0]["last_response"])
        self.sinks = [Sink(port, folder)]  # the primary comes back
        self.until(lambda: self.cli("queue")["total"] == 0, "the queue draining")
        got = b"".join(self.sinks[0].messages())
        for i in range(5):
            self.assertEqual(got.count(f"<waiting-{i}@sender.example>".encode()), 1, "each message exactly once")

    def test_outbound_permanent_refusal_bounces_with_one_dsn_to_the_sender(self):
        primary, smarthost = free_port(), free_port()
        self.sinks = [Sink(smarthost, os.path.join(scratch("sink-"), "d"), reject="RCPT")]
        self.start_server(primary, smarthost_port=smarthost)
        self.send("refused@example.com", sender="alice@example.com", rcpts=("bob@remote.example",), outbound=True)
        self.send("refused-null@example.com", sender="", rcpts=("bob@remote.example",), outbound=True)

        def dsn_queued():
            entries = self.cli("queue")["entries"]
            return any(e["recipients"][0]["address"] == "alice@example.com" for e in entries)

        self.until(dsn_queued, "a DSN for the sender")
        query = 'subject:"Undelivered Mail Returned to Sender"'
        self.until(lambda: self.cli("search", query)["total"] >= 1, "the DSN becoming searchable")
        time.sleep(1.5)  # time for a second, wrong, DSN to show up if one were sent
        res = self.cli("search", query)
        self.assertEqual(res["total"], 1, "one DSN: the null sender never gets one")
        dsn = self.cli("show", str(res["results"][0]["id"]))
        self.assertEqual(dsn["envelope"]["mail_from"], "")
        self.assertEqual(dsn["envelope"]["rcpt_to"], ["alice@example.com"])
        types = [p["content_type"] for p in dsn["parts"]]
        self.assertIn("message/delivery-status", types)
        raw = subprocess.run([BIN, "--data", self.data, "show", str(dsn["id"]), "--raw"], capture_output=True).stdout
        self.assertIn(b"Final-Recipient: rfc822; bob@remote.example", raw)
        self.assertIn(b"Action: failed", raw)
        self.assertIn(b"Status: 5.", raw)
        # The bounced originals left the queue; only the DSN waits (for the primary, which is down).
        entries = self.cli("queue")["entries"]
        self.assertEqual([e["recipients"][0]["address"] for e in entries], ["alice@example.com"])
        self.assertEqual(entries[0]["route"], "primary", "the DSN goes to the internal sender through the primary")
        with open(self.log_path) as f:
            log = f.read()
        self.assertIn("bounced to=<bob@remote.example>", log)
        self.assertIn("no notification: the null sender never gets one", log)

    def test_inbound_refusal_by_the_primary_after_250_is_kept_for_the_administrator(self):
        port = free_port()
        self.sinks = [Sink(port, os.path.join(scratch("sink-"), "d"), reject="RCPT")]
        self.start_server(port)  # verify_recipients = "none": mailark cannot know before
        self.send("kept-refused@sender.example", sender="alice@sender.example")
        self.until(lambda: self.cli("queue")["total"] == 1 and
                   self.cli("queue")["entries"][0]["recipients"][0]["state"] == "kept", "the refusal kept")
        time.sleep(1.5)
        self.assertEqual(self.cli("search", 'subject:"Undelivered Mail"')["total"], 0, "no DSN to the outside")
        self.assertEqual(self.cli("queue")["total"], 1, "nothing else was queued")
        with open(self.log_path) as f:
            self.assertIn("kept for the administrator to=<bob@example.com>", f.read())
        # The administrator fixes the primary and retries: the sink now accepts.
        self.sinks[0].stop()
        self.sinks = [Sink(port, os.path.join(scratch("sink-"), "d"))]
        self.assertEqual(self.cli("queue", "retry", "1")["failed"], 0)
        self.until(lambda: self.cli("queue")["total"] == 0, "delivery after the retry")
        self.assertTrue(any(b"<kept-refused@sender.example>" in m for m in self.sinks[0].messages()))


    def test_control_bytes_in_a_servers_reply_are_neutralised(self):
        """api/smtp/reply.cc: a server's reply text goes into the log, the queue and DSNs; a
        hostile server that puts a bare LF (to forge a log line) and terminal escapes in its RCPT reply
        has them written as '?'. The server here is the attacker (a few lines of Python), not a stand-in
        for a real MTA."""
        def session(conn, lines, stop):
            for line in lines:
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    conn.sendall(b"250 hostile\r\n")
                elif verb == b"RCPT":
                    conn.sendall(b"550 5.1.1 no\x1b]0;pwned\x07 such\n2026-01-01T00:00:00+00:00 mailark[1]: "
                                 b"FORGED\x1b[2J user\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    break
                else:
                    conn.sendall(b"250 ok\r\n")

        port = self.hostile_exchanger(session)
        self.start_server(port)
        self.send("hostile-reply@sender.example")
        self.until(lambda: self.cli("queue")["total"] == 1 and
                   self.cli("queue")["entries"][0]["recipients"][0]["state"] == "kept", "the refusal kept")
        said = self.cli("queue")["entries"][0]["recipients"][0]["last_response"]
        self.assertIn("550 5.1.1 no?]0;pwned? such?2026-01-01T00:00:00+00:00 mailark[1]: FORGED?[2J user", said)
        with open(self.log_path, "rb") as f:
            log = f.read()
        self.assertNotIn(b"\x1b", log)
        self.assertNotIn(b"\x07", log)
        self.assertFalse(any(line.startswith(b"2026-01-01T00:00:00") for line in log.splitlines()),
                         "no forged line in the log")

    def hostile_exchanger(self, session, receive_buffer=None):
        """A server that greets, then leaves the connection to session(conn, lines, stop) (lines: the
        client's lines as they come), one thread per connection. It is the attacker (a few lines of
        Python), not a stand-in for a real MTA."""
        port = free_port()
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if receive_buffer:  # before listen(): the window a connection starts with
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        listener.bind(("127.0.0.1", port))
        listener.listen(8)
        stop = threading.Event()

        def serve(conn):
            with conn:
                try:
                    conn.sendall(b"220 hostile ESMTP\r\n")
                    session(conn, conn.makefile("rb"), stop)
                except OSError:
                    pass

        def accept():
            listener.settimeout(0.2)
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                threading.Thread(target=serve, args=(conn,), daemon=True).start()

        t = threading.Thread(target=accept, daemon=True)
        t.start()
        self.addCleanup(lambda: (stop.set(), t.join(5), listener.close()))
        return port

    def test_an_endless_reply_is_cut_off_and_the_mail_kept(self):
        """api/smtp/reply.h: an exchanger that answers EHLO with "250-" lines that never end the reply
        (1 MiB of them, then nothing, the connection held open) gets "reply too long" after 64 KiB: the
        delivery fails for now and the mail stays queued, where the reader kept every line and waited
        for the rest until the reply timeout (300 s here). A drip of one line every 0.3 s meets the
        reply timeout as a deadline for the whole reply (delivery.reply_timeout = 2), where each line
        started the wait again."""
        def endless(conn, lines, stop):
            next(lines)  # EHLO
            line = b"250-" + b"x" * 60 + b"\r\n"
            conn.sendall(line * (1024 * 1024 // len(line)))
            stop.wait()

        def drip(conn, lines, stop):
            next(lines)  # EHLO
            while not stop.wait(0.3):
                conn.sendall(b"250-still going\r\n")

        for behaviour, extra, said in ((endless, "", "reply too long"),
                                       (drip, "reply_timeout = 2", "timeout waiting for a reply")):
            with self.subTest(said):
                port = self.hostile_exchanger(behaviour)
                self.start_server(port, extra=extra)
                self.send(f"{behaviour.__name__}@sender.example")
                self.until(lambda: self.cli("queue")["total"] == 1 and
                           said in self.cli("queue")["entries"][0]["recipients"][0]["last_response"],
                           f"the delivery given up with {said!r}")
                entry = self.cli("queue")["entries"][0]
                self.assertEqual(entry["recipients"][0]["state"], "pending", "kept for a later try, not bounced")
                self.assertEqual(self.server.poll(), None, "the server still runs")
                self.server.send_signal(signal.SIGTERM)
                self.assertEqual(self.server.wait(timeout=30), 0)
                self.log.close()

    def test_a_large_message_to_a_slow_reader_is_delivered(self):
        """api/smtp/client.cc write: a 10 MB message to a server that reads 64 KiB every 50 ms (a slow
        link) takes several seconds, more than delivery.reply_timeout (2 s here); each 64 KiB goes
        within it, so the message is delivered, where the reply timeout for the whole write failed it
        on every try. The server is a few lines of Python with a small receive window, so that the
        kernel's buffers cannot take the message at once."""
        received = []

        def slow(conn, lines, stop):
            def reply(text):
                conn.sendall(text)

            buf = b""
            while not stop.is_set():
                while b"\r\n" not in buf:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    buf += chunk
                line, buf = buf.split(b"\r\n", 1)
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    reply(b"250-slow\r\n250 8BITMIME\r\n")
                elif verb == b"DATA":
                    reply(b"354 go on\r\n")
                    while not buf.endswith(b"\r\n.\r\n"):
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        buf += chunk
                        time.sleep(0.05)
                    received.append(len(buf))
                    buf = b""
                    reply(b"250 2.0.0 taken\r\n")
                elif verb == b"QUIT":
                    reply(b"221 bye\r\n")
                    return
                else:
                    reply(b"250 ok\r\n")

        port = self.hostile_exchanger(slow, receive_buffer=65536)
        self.start_server(port, extra="reply_timeout = 2")
        body = ("x" * 76 + "\r\n") * (10 * 1024 * 1024 // 78)
        s = smtplib.SMTP("127.0.0.1", self.mx, timeout=60)
        s.sendmail("alice@sender.example", ["bob@example.com"],
                   "Subject: large\r\nMessage-ID: <large@sender.example>\r\n\r\n" + body)
        s.quit()
        self.until(lambda: self.cli("queue")["total"] == 0, "the large message delivered", seconds=90)
        self.assertEqual(len(received), 1, "delivered once")
        self.assertGreater(received[0], 10 * 1024 * 1024 - 1024)

if __name__ == "__main__":
    unittest.main()
