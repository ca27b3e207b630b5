"""mailark with a real Postfix on both sides, started by the test on loopback.

1. Postfix as the company's primary server: inbound mail that mailark accepts reaches Postfix's
   mailboxes; with Postfix stopped the mail waits in mailark's queue; started again, it all arrives,
   once.
2. Postfix as a primary that knows its users: mailark asks it at RCPT time (a cached probe), refuses
   unknown recipients with Postfix's own answer, never bounces to an outside sender, and keeps
   accepting mail for known users while Postfix is down, across a restart of mailark.
3. Postfix as the primary sending outbound mail through mailark: Postfix relays to mailark's outbound
   listener, mailark finds the recipient domain's MX through a DNS server (dnsmasq) and delivers to
   Postfix's smtp-sink playing the remote MX.
4. Recipient limits on both hops: a sending Postfix pipelines more recipients than mailark takes in
   one message, and mailark delivers to a primary Postfix that takes fewer still; on each hop the rest
   go in another transaction, and every recipient gets one copy.
5. A mail loop through a primary that routes the domain back to mailark ends at limits.hops.
6. A primary that does not offer 8BITMIME gets 8-bit mail converted to 7-bit MIME; the archive keeps
   the message as it came.
7. A primary that offers STARTTLS but cannot complete a handshake mailark accepts (only old protocols)
   gets its mail without TLS under delivery.tls = "opportunistic", as Postfix's "may" does; never when
   certificates are to be verified.
"""
import email
import email.policy
import json
import os
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
import unittest

import postfix_instance
from postfix_instance import Postfix, nobody_ids
from test_delivery import BIN, SINK, Sink, free_port, wait_port

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


@unittest.skipUnless(postfix_instance.available(), "needs root and the Debian package postfix")
class PostfixTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mailark-postfix-")
        os.chmod(self.tmp, 0o755)
        self.cleanups = []

    def tearDown(self):
        for c in reversed(self.cleanups):
            try:
                c()
            except Exception:  # noqa: BLE001 - best effort
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    def start_mailark(self, config):
        self.data = os.path.join(self.tmp, "data")
        cfg = os.path.join(self.tmp, "mailark.toml")
        with open(cfg, "w") as f:
            f.write(config)
        self.mailark_log = os.path.join(self.tmp, "mailark.log")
        log = open(self.mailark_log, "wb")
        p = subprocess.Popen([BIN, "--data", self.data, "serve", "--config", cfg], stdout=log, stderr=subprocess.STDOUT)

        def stop():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=30)
            log.close()

        self.cleanups.append(stop)
        return p

    def cli(self, *args):
        p = subprocess.run([BIN, "--data", self.data, *args, "--json"], capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        return json.loads(p.stdout)

    def until(self, cond, what, seconds=60):
        deadline = time.time() + seconds
        while not cond():
            if time.time() > deadline:
                with open(self.mailark_log) as f:
                    self.fail(f"{what} did not happen\nmailark:\n{f.read()[-2000:]}")
            time.sleep(0.2)

    def mailbox_primary(self, port, mailbox_maps="static:inbox/", extra=""):
        """A Postfix playing the primary, delivering example.com into Maildirs under self.mailboxes
        (owned by nobody); started, and stopped at the end."""
        uid, gid = nobody_ids()
        self.mailboxes = os.path.join(self.tmp, "mailboxes")
        os.makedirs(self.mailboxes)
        shutil.chown(self.mailboxes, uid, gid)
        postfix = Postfix(os.path.join(self.tmp, "primary"), port, f"""
mydestination =
virtual_mailbox_domains = example.com
virtual_mailbox_base = {self.mailboxes}
virtual_mailbox_maps = {mailbox_maps}
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
{extra}
""")
        postfix.start()
        self.cleanups.append(postfix.stop)
        return postfix

    def mailbox_files(self, box="inbox"):
        """The messages (bytes) in one Maildir of the primary."""
        out = []
        for sub in ("new", "cur"):
            d = os.path.join(self.mailboxes, box, sub)
            for name in os.listdir(d) if os.path.isdir(d) else []:
                with open(os.path.join(d, name), "rb") as f:
                    out.append(f.read())
        return out

    def inbound_mailark(self, mx_port, primary_port, extra="", inbound=""):
        """mailark's inbound listener for example.com in front of the primary; waits until it listens.
        extra: TOML after [delivery]'s primary; inbound: more [inbound] keys."""
        mailark = self.start_mailark(f"""
[[listener]]
role = "inbound"
port = {mx_port}
tls = "none"
[inbound]
domains = ["example.com"]
{inbound}
[delivery]
primary = ["127.0.0.1:{primary_port}"]
{extra}
""")
        wait_port(mx_port, mailark, "mailark serve")
        return mailark

    def test_postfix_primary_receives_waits_and_receives_again(self):
        primary_port, mx_port = free_port(), free_port()
        postfix = self.mailbox_primary(primary_port)
        self.inbound_mailark(mx_port, primary_port, "retry_schedule = [1]")
        delivered = self.mailbox_files

        def send(mid):
            s = smtplib.SMTP("127.0.0.1", mx_port, timeout=10)
            s.sendmail("sender@outside.example", ["carol@example.com"],
                       f"Subject: {mid}\r\nMessage-ID: <{mid}>\r\n\r\nfor the primary\r\n")
            s.quit()

        send("first@outside.example")
        self.until(lambda: any(b"<first@outside.example>" in m for m in delivered()), "delivery into Postfix")

        postfix.stop()  # the primary goes down
        for i in range(10):
            send(f"while-down-{i}@outside.example")
        self.until(lambda: self.cli("queue")["total"] == 10 and
                   all(e["recipients"][0]["attempts"] >= 1 for e in self.cli("queue")["entries"]),
                   "the messages waiting in the queue")
        self.assertFalse(any(b"while-down" in m for m in delivered()))

        postfix.start()  # and comes back
        self.until(lambda: self.cli("queue")["total"] == 0, "the queue draining into Postfix")
        self.until(lambda: sum(b"while-down" in m for m in delivered()) == 10, "all 10 in the mailbox")
        got = b"".join(delivered())
        for i in range(10):
            self.assertEqual(got.count(f"<while-down-{i}@outside.example>".encode()), 1)
        self.assertIn("status=sent", postfix.read_log())

    def test_unknown_recipients_are_refused_at_rcpt_time_by_asking_postfix(self):
        users = os.path.join(self.tmp, "vmailbox")
        with open(users, "w") as f:
            f.write("ana@example.com ana/\nben@example.com ben/\n")
        primary_port, mx_port = free_port(), free_port()
        postfix = self.mailbox_primary(primary_port, mailbox_maps=f"texthash:{users}")
        config = f"""
[[listener]]
role = "inbound"
port = {mx_port}
tls = "none"
[inbound]
domains = ["example.com"]
verify_recipients = "primary"
[delivery]
primary = ["127.0.0.1:{primary_port}"]
retry_schedule = [1]
"""
        mailark = self.start_mailark(config)
        wait_port(mx_port, mailark, "mailark serve")

        def rcpt(address):
            s = smtplib.SMTP("127.0.0.1", mx_port, timeout=30)
            s.ehlo("outside.example")
            s.mail("someone@outside.example")
            code, text = s.rcpt(address)
            if code == 250:
                s.data(f"Subject: to {address}\r\nMessage-ID: <{address}.{time.time()}@outside.example>\r\n\r\nhi\r\n")
            s.quit()
            return code, text.decode()

        code, _ = rcpt("ana@example.com")
        self.assertEqual(code, 250)
        code, text = rcpt("nobody@example.com")
        self.assertEqual(code, 550, text)
        self.assertIn("5.1.1 <nobody@example.com>: Recipient address rejected", text)
        self.assertIn("User unknown", text, "Postfix's own reason is passed on")
        code, _ = rcpt("nobody@example.com")
        self.assertEqual(code, 550, "refused again, from the cache")
        with open(self.mailark_log) as f:
            log = f.read()
        self.assertEqual(log.count("verify: <nobody@example.com> refused by the primary"), 1, "one probe, then the cache")
        self.until(lambda: self.cli("queue")["total"] == 0, "delivery to ana")

        postfix.stop()  # the primary goes down
        code, _ = rcpt("ana@example.com")
        self.assertEqual(code, 250, "a user the primary knew keeps receiving mail through the outage")
        code, text = rcpt("ben@example.com")
        self.assertEqual(code, 451, "never asked before, and the primary cannot be asked now")
        self.assertIn("4.4.3", text)
        # The answers are durable: a restarted mailark still knows ana while Postfix is down.
        mailark.send_signal(signal.SIGTERM)
        self.assertEqual(mailark.wait(timeout=30), 0)
        mailark = self.start_mailark(config)
        wait_port(mx_port, mailark, "mailark serve")
        code, _ = rcpt("ana@example.com")
        self.assertEqual(code, 250)
        self.assertEqual(self.cli("queue")["total"], 2)

        postfix.start()
        self.until(lambda: self.cli("queue")["total"] == 0, "the queue draining into Postfix")
        self.assertEqual(self.cli("search", 'subject:"Undelivered Mail"')["total"], 0, "no DSN was ever made")
        self.assertIn("status=sent", postfix.read_log())

    def test_recipient_probes_share_connections_to_the_primary(self):
        """api/smtp/verifier.h: a message for 48 recipients the primary has not been asked about costs it a
        session or two, not 48: probes share a connection (MAIL FROM:<>, RCPT TO, RSET), which is closed
        a few seconds after the last probe. A connection the primary closed meanwhile is dropped and a
        new one opened; the answers stay right throughout."""
        users = os.path.join(self.tmp, "vmailbox")
        with open(users, "w") as f:
            f.write("".join(f"user{i}@example.com user{i}/\n" for i in range(80)))
        primary_port, mx_port = free_port(), free_port()
        postfix = self.mailbox_primary(primary_port, mailbox_maps=f"texthash:{users}")
        self.inbound_mailark(mx_port, primary_port, "retry_schedule = [1]", inbound='verify_recipients = "primary"')

        def send(recipients):
            s = smtplib.SMTP("127.0.0.1", mx_port, timeout=60)
            s.ehlo("outside.example")
            s.mail("someone@outside.example")
            answers = {a: s.rcpt(a)[0] for a in recipients}
            s.rset()
            s.quit()
            return answers

        def sessions():
            log = postfix.read_log()
            return log.count("disconnect from localhost[127.0.0.1]")

        known = [f"user{i}@example.com" for i in range(40)]
        unknown = [f"stranger{i}@example.com" for i in range(8)]  # under limits.errors
        answers = send(known + unknown)
        self.assertEqual({a: answers[a] for a in known}, {a: 250 for a in known})
        self.assertEqual({a: answers[a] for a in unknown}, {a: 550 for a in unknown})
        with open(self.mailark_log) as f:
            self.assertEqual(f.read().count("verify: <"), 48, "each address asked once")
        # The probes' session ends a few seconds after the last probe (kIdle); the primary saw one
        # (two at most, were a probe's reply slow), not 48.
        self.until(lambda: sessions() >= 1, "the probes' session closed", 30)
        time.sleep(1)
        self.assertLessEqual(sessions(), 2, postfix.read_log()[-3000:])

        # A kept connection the primary closes (its smtpd killed) is replaced by a new one.
        answers = send(["user40@example.com"])
        self.assertEqual(answers["user40@example.com"], 250)
        killed = 0
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{pid}/comm") as f:
                    comm = f.read().strip()
            except OSError:
                continue
            if int(fields[1]) == postfix.proc.pid and comm == "smtpd":
                os.kill(int(pid), signal.SIGKILL)
                killed += 1
        self.assertGreaterEqual(killed, 1, "the primary's smtpd serving the kept connection")
        answers = send(["user41@example.com", "stranger99@example.com"])
        self.assertEqual(answers, {"user41@example.com": 250, "stranger99@example.com": 550})
        with open(self.mailark_log) as f:
            self.assertIn("verify: a connection kept for probes is closed", f.read())

    @unittest.skipUnless(os.path.exists(SINK) and os.path.exists(DNSMASQ), "needs smtp-sink and dnsmasq")
    def test_postfix_sends_outbound_through_mailark_to_the_mx(self):
        dns_port, mx_smtp_port, outbound_port, postfix_port = free_port(), free_port(), free_port(), free_port()
        cmd = [DNSMASQ, "-k", "--user=root", "--port", str(dns_port), "--listen-address=127.0.0.1",
               "--bind-interfaces", "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--pid-file=",
               "--local=/partner.example/", "--mx-host=partner.example,mx.partner.example,5",
               "--host-record=mx.partner.example,127.0.0.4"]
        dns = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.cleanups.append(lambda: (dns.terminate(), dns.wait(timeout=10)))
        remote = Sink(mx_smtp_port, os.path.join(self.tmp, "remote-mx"), address="127.0.0.4")
        self.cleanups.append(remote.stop)
        mailark = self.start_mailark(f"""
[[listener]]
role = "outbound"
port = {outbound_port}
tls = "starttls"
[outbound]
networks = ["127.0.0.0/8"]
[dns]
servers = ["127.0.0.1@{dns_port}"]
[delivery]
mx_port = {mx_smtp_port}
retry_schedule = [1]
""")
        wait_port(outbound_port, mailark, "mailark serve")
        postfix = Postfix(os.path.join(self.tmp, "postfix"), postfix_port, f"""
mydestination =
relayhost = [127.0.0.1]:{outbound_port}
smtp_tls_security_level = may
""")
        postfix.start()
        self.cleanups.append(postfix.stop)

        s = smtplib.SMTP("127.0.0.1", postfix_port, timeout=10)  # a user of the primary sends
        s.sendmail("dave@northwind.example", ["erin@partner.example"],
                   "Subject: quote\r\nMessage-ID: <quote@northwind.example>\r\n\r\nprices attached\r\n")
        s.quit()
        self.until(lambda: any(b"<quote@northwind.example>" in m for m in remote.messages()),
                   "delivery to the partner's MX")
        self.until(lambda: self.cli("search", "id:quote@northwind.example")["total"] == 1, "the message indexed")
        res = self.cli("search", "id:quote@northwind.example")
        shown = self.cli("show", str(res["results"][0]["id"]))
        self.assertEqual(shown["envelope"]["direction"], "outbound")
        self.assertEqual(shown["envelope"]["helo"], "primary.test.example")
        self.assertTrue(shown["envelope"]["tls"].startswith("TLSv1."), "Postfix used STARTTLS to mailark")
        with open(self.mailark_log) as f:
            self.assertIn("delivered to=<erin@partner.example> relay=mx.partner.example[127.0.0.4]", f.read())
        self.assertIn("relay=127.0.0.1[127.0.0.1]", postfix.read_log())


    def test_postfix_sends_more_recipients_than_one_message_takes(self):
        """Recipient limits on both hops, with a real Postfix on each side. A sending Postfix pipelines 130
        recipients to mailark's inbound listener, which takes 100 a message: the 30 past the limit get
        452 (send the rest in another message) without counting as errors (api/smtp/protocol.h
        max_recipient_overshoot), so the session is not closed after 20 of them (it was, before: Postfix
        then deferred all 130 and never got them through), and Postfix sends the 30 in a later
        transaction. mailark then delivers to a primary Postfix that takes 40 a message:
        the recipients it defers with 452 while taking others go in the next transaction at once, not
        after the retry delay (an hour here; api/smtp/delivery.cc record). Every recipient's copy
        reaches the primary's mailbox once."""
        mx_port, sender_port, primary_port = free_port(), free_port(), free_port()
        primary = self.mailbox_primary(primary_port, extra="smtpd_recipient_limit = 40")
        self.inbound_mailark(mx_port, primary_port, "retry_schedule = [3600]\n[limits]\nrecipients = 100")
        sender = Postfix(os.path.join(self.tmp, "sender"), sender_port, f"""
mydestination =
relayhost = [127.0.0.1]:{mx_port}
smtp_destination_recipient_limit = 200
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
""")
        sender.start()
        self.cleanups.append(sender.stop)
        rcpts = [f"u{i}@example.com" for i in range(130)]
        s = smtplib.SMTP("127.0.0.1", sender_port, timeout=10)
        s.sendmail("news@outside.example", rcpts,
                   "Subject: to many\r\nMessage-ID: <many@outside.example>\r\n\r\nfor everyone\r\n")
        s.quit()

        def sent():
            return {line.split("to=<", 1)[1].split(">", 1)[0] for line in sender.read_log().splitlines()
                    if "status=sent" in line and "to=<" in line}

        # Postfix defers the 30 and sends them in a later queue run (flushed here, so that its own
        # back-off timers, which a busy machine stretches, do not decide the test's time).
        flushed = [0.0]

        def all_sent():
            if time.time() - flushed[0] > 2:
                sender.flush()
                flushed[0] = time.time()
            return sent() == set(rcpts)

        self.until(all_sent, "the sending Postfix delivering all 130 recipients to mailark")
        log = sender.read_log()
        self.assertNotIn("Too many errors", log)
        self.assertIn("Too many recipients", log, "the 30 past the limit were deferred, not taken")
        # Two transactions, so two records of the same bytes: 100 recipients and 30.
        self.until(lambda: self.cli("search", "id:many@outside.example")["total"] == 2, "both transactions indexed")
        got = []
        for r in self.cli("search", "id:many@outside.example")["results"]:
            got += self.cli("show", str(r["id"]))["envelope"]["rcpt_to"]
        self.assertEqual(sorted(got), sorted(rcpts))

        def delivered():
            out = []
            for m in self.mailbox_files():
                head = m.split(b"\n\n", 1)[0]
                out += [line.split(b":", 1)[1].strip().decode() for line in head.splitlines()
                        if line.startswith(b"Delivered-To:")]
            return out

        self.until(lambda: len(delivered()) >= 130, "every recipient's copy in the primary's mailbox")
        self.assertEqual(sorted(delivered()), sorted(rcpts))
        # The primary took them in transactions of at most 40 (its limit met), 130 in all.
        taken = [int(line.split("nrcpt=", 1)[1].split()[0]) for line in primary.read_log().splitlines()
                 if "from=<news@outside.example>" in line and "nrcpt=" in line]
        self.assertEqual(sum(taken), 130)
        self.assertLessEqual(max(taken), 40)
        self.assertGreaterEqual(len(taken), 4)
        self.until(lambda: self.cli("queue")["total"] == 0, "mailark's queue empty")

    def test_a_mail_loop_through_the_primary_ends(self):
        """A primary that routes the company's domain back to the gateway (a misconfiguration) makes a mail
        loop: every pass is archived and delivered again. mailark refuses a message with more Received
        fields than limits.hops (554 5.4.6, api/smtp/protocol.h max_hops), so the loop ends after about
        hops / 2 passes (each adds mailark's and Postfix's field), before Postfix's own limit (50)."""
        mx_port, primary_port = free_port(), free_port()
        primary = Postfix(os.path.join(self.tmp, "primary"), primary_port, f"""
mydestination =
relayhost = [127.0.0.1]:{mx_port}
""")
        primary.start()
        self.cleanups.append(primary.stop)
        self.inbound_mailark(mx_port, primary_port, "retry_schedule = [1]\n[limits]\nhops = 20\n", inbound='verify_recipients = "none"')
        s = smtplib.SMTP("127.0.0.1", mx_port, timeout=10)
        s.sendmail("someone@outside.example", ["carol@example.com"],
                   "Subject: round and round\r\nMessage-ID: <loop@outside.example>\r\n\r\nagain\r\n")
        s.quit()
        self.until(lambda: "5.4.6 Too many hops" in primary.read_log(), "mailark refusing the looping message", 120)
        # The first pass came with no Received field, each later one with two more: the 11th with 20
        # (taken: the limit), the 12th with 22 (refused). The index shows the archive's passes within
        # its commit interval; then no more come.
        def passes():
            return self.cli("search", "id:loop@outside.example")["total"]

        self.until(lambda: passes() >= 11, "11 passes archived")
        time.sleep(3)
        self.assertEqual(passes(), 11, "the loop has ended")
        self.assertNotIn("hopcount exceeded", primary.read_log(), "mailark ended it, not Postfix's own limit")
        self.until(lambda: self.cli("queue")["total"] == 0, "mailark's queue empty")

    def test_eight_bit_mail_is_converted_for_a_primary_without_8bitmime(self):
        """RFC 6152: 8-bit data goes only to a server that offers 8BITMIME; for one that does not (here a
        Postfix told not to announce it) mailark converts the message to 7-bit MIME, as Postfix does:
        the 8-bit parts quoted-printable or base64, what a reader sees the same. The archive keeps the
        message as it came."""
        primary_port, mx_port = free_port(), free_port()
        self.mailbox_primary(primary_port, extra="smtpd_discard_ehlo_keywords = 8bitmime")
        self.inbound_mailark(mx_port, primary_port, "retry_schedule = [1]", inbound='verify_recipients = "none"')
        blob = bytes((i * 37 + 11) % 256 for i in range(3000)).replace(b"\r", b"x").replace(b"\n", b"x")
        text = "Viele Grüße aus Köln, bis bald am Rhein.\r\n".encode("latin-1")
        multipart = (b"From: a@outside.example\r\nTo: carol@example.com\r\nSubject: parts\r\n"
                     b"Message-ID: <eight-parts@outside.example>\r\nMIME-Version: 1.0\r\n"
                     b"Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\n"
                     b"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + text +
                     b"--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n"
                     b"Content-Disposition: attachment; filename=blob.bin\r\n\r\n" + blob + b"\r\n--b1--\r\n")
        plain = (b"From: a@outside.example\r\nTo: carol@example.com\r\nSubject: plain\r\n"
                 b"Message-ID: <eight-plain@outside.example>\r\n\r\n" + "Le café est prêt.\r\n".encode())
        s = smtplib.SMTP("127.0.0.1", mx_port, timeout=10)
        for m in (multipart, plain):
            s.sendmail("a@outside.example", ["carol@example.com"], m)
        s.quit()
        self.until(lambda: len(self.mailbox_files()) == 2, "both messages in the primary's mailbox")
        got = {}
        for raw in self.mailbox_files():
            self.assertTrue(all(b < 0x80 for b in raw), "7-bit only at the primary")
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            got[msg["Message-ID"]] = msg
        parts = got["<eight-parts@outside.example>"]
        body, attachment = [p for p in parts.walk() if not p.is_multipart()]
        self.assertEqual(body.get_content(), text.decode("latin-1").rstrip("\r\n"))  # the last CRLF is the boundary's
        self.assertIn(body["Content-Transfer-Encoding"], ("quoted-printable", "base64"))
        self.assertEqual(attachment.get_content(), blob)
        self.assertEqual(attachment["Content-Transfer-Encoding"], "base64")
        one = got["<eight-plain@outside.example>"]
        self.assertEqual(one["MIME-Version"], "1.0")
        self.assertEqual(one.get_content_charset(), "utf-8")  # named: it was not US-ASCII
        self.assertEqual(one.get_content().replace("\r\n", "\n"), "Le café est prêt.\n")  # CRLF in base64: RFC 2045's canonical form
        with open(self.mailark_log) as f:
            self.assertEqual(f.read().count("converted to 7-bit MIME"), 2)
        # The archive holds each message as it came, 8-bit and all.
        for mid, sent in (("eight-parts@outside.example", multipart), ("eight-plain@outside.example", plain)):
            self.until(lambda: self.cli("search", f"id:{mid}")["total"] == 1, "the message in the index")
            seq = self.cli("search", f"id:{mid}")["results"][0]["id"]
            p = subprocess.run([BIN, "--data", self.data, "show", str(seq), "--raw"], capture_output=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertTrue(p.stdout.endswith(sent), p.stdout[-300:])

    def test_a_primary_whose_tls_fails_gets_its_mail_without_tls(self):
        """A Postfix primary that offers STARTTLS with only TLS 1.0 and 1.1 (as an old Exchange): the
        handshake fails (mailark asks for TLS 1.2 or newer). With delivery.tls = "opportunistic" (the
        default) mailark delivers at once without TLS, as Postfix's "may" level does; with
        delivery.verify_certificates it does not downgrade, and the mail waits."""
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        os.path.join(self.tmp, "key.pem"), "-out", os.path.join(self.tmp, "cert.pem"), "-days", "2",
                        "-subj", "/CN=primary.test.example"], check=True, capture_output=True)
        os.chmod(os.path.join(self.tmp, "key.pem"), 0o644)
        primary_port, mx_port = free_port(), free_port()
        primary = self.mailbox_primary(primary_port, extra=f"""
smtpd_tls_security_level = may
smtpd_tls_cert_file = {self.tmp}/cert.pem
smtpd_tls_key_file = {self.tmp}/key.pem
smtpd_tls_protocols = !SSLv2, !SSLv3, !TLSv1.2, !TLSv1.3
""")
        self.inbound_mailark(mx_port, primary_port, "retry_schedule = [1]", inbound='verify_recipients = "none"')

        def send(mid):
            s = smtplib.SMTP("127.0.0.1", mx_port, timeout=10)
            s.sendmail("a@outside.example", ["carol@example.com"], f"Subject: tls\r\nMessage-ID: <{mid}>\r\n\r\nhi\r\n")
            s.quit()

        send("old-tls@outside.example")
        self.until(lambda: any(b"<old-tls@outside.example>" in m for m in self.mailbox_files()), "delivery without TLS")
        self.assertIn("SSL_accept error", primary.read_log(), "the handshake was tried, and failed")
        with open(self.mailark_log) as f:
            self.assertIn('delivering without TLS (delivery.tls = "opportunistic")', f.read())

        # Verifying certificates: no downgrade; the message waits in the queue.
        for c in reversed(self.cleanups[-1:]):
            c()
        self.cleanups.pop()
        self.inbound_mailark(mx_port, primary_port, "retry_schedule = [1]\nverify_certificates = true",
                             inbound='verify_recipients = "none"')
        send("verified-tls@outside.example")
        self.until(lambda: self.cli("queue")["total"] == 1 and
                   self.cli("queue")["entries"][0]["recipients"][0]["attempts"] >= 2, "two attempts that fail")
        self.assertFalse(any(b"<verified-tls@outside.example>" in m for m in self.mailbox_files()))
        self.assertIn("TLS handshake with", self.cli("queue")["entries"][0]["recipients"][0]["last_response"])

if __name__ == "__main__":
    unittest.main()
