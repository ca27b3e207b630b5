"""Outbound delivery through DNS: a real DNS server (dnsmasq) started by the test on loopback serves MX
and A records; Postfix's smtp-sink plays the recipient domains' mail exchangers on 127.0.0.2 and
127.0.0.3. mailark must find them by MX, fall back to the address of a domain without MX records, and
bounce a domain that does not exist (with a DSN to the sender).
"""
import json
import os
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
import unittest

from harness import DNSMASQ, dnsmasq
from test_delivery import BIN, SINK, Sink, free_port, wait_port


@unittest.skipUnless(os.path.exists(SINK) and os.path.exists(DNSMASQ),
                     "needs Postfix's smtp-sink and dnsmasq (bash scripts/setup.sh)")
class MxDeliveryTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mailark-mx-")
        os.chmod(self.tmp, 0o755)
        self.procs = []
        self.dns_port = free_port()
        self.smtp_port = free_port()  # the exchangers' port (25 on the internet)
        self.procs.append(dnsmasq(self.dns_port, "--local=/remote.example/", "--local=/plain.example/",
                                  "--mx-host=remote.example,mx1.remote.example,10",
                                  "--host-record=mx1.remote.example,127.0.0.2", "--host-record=plain.example,127.0.0.3",
                                  "--address=/nonexistent.example/",
                                  # bücher.example, as DNS holds it: by its A-labels
                                  "--local=/xn--bcher-kva.example/",
                                  "--mx-host=xn--bcher-kva.example,mx1.remote.example,10",
                                  # many.example: eight exchangers; the first seven take no
                                  # connection, the eighth is the working sink on 127.0.0.2
                                  "--local=/many.example/",
                                  *[f"--mx-host=many.example,mx{n}.many.example,{10 * n}" for n in range(1, 9)],
                                  *[f"--host-record=mx{n}.many.example,127.0.0.{20 + n}" for n in range(1, 8)],
                                  "--host-record=mx8.many.example,127.0.0.2"))
        self.mx1 = Sink(self.smtp_port, os.path.join(self.tmp, "mx1"), address="127.0.0.2")
        self.mx2 = Sink(self.smtp_port, os.path.join(self.tmp, "mx2"), address="127.0.0.3")
        self.outbound = free_port()
        cfg = os.path.join(self.tmp, "mailark.toml")
        with open(cfg, "w") as f:
            f.write(f"""
[[listener]]
role = "outbound"
port = {self.outbound}
tls = "none"
[dns]
servers = ["127.0.0.1@{self.dns_port}"]
[delivery]
mx_port = {self.smtp_port}
retry_schedule = [1]
""")
        self.data = os.path.join(self.tmp, "data")
        self.log = open(os.path.join(self.tmp, "serve.log"), "wb")
        self.server = subprocess.Popen([BIN, "--data", self.data, "serve", "--config", cfg], stdout=self.log,
                                       stderr=subprocess.STDOUT)
        wait_port(self.outbound, self.server, "mailark serve")

    def tearDown(self):
        if self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            self.server.wait(timeout=30)
        for s in (self.mx1, self.mx2):
            s.stop()
        for p in self.procs:
            p.terminate()
            p.wait(timeout=10)
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def cli(self, *args):
        p = subprocess.run([BIN, "--data", self.data, *args, "--json"], capture_output=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        return json.loads(p.stdout)

    def until(self, cond, what, seconds=30):
        deadline = time.time() + seconds
        while not cond():
            if time.time() > deadline:
                with open(os.path.join(self.tmp, "serve.log")) as f:
                    self.fail(f"{what} did not happen:\n{f.read()[-3000:]}")
            time.sleep(0.2)

    def test_mx_lookup_implicit_mx_and_unknown_domain(self):
        s = smtplib.SMTP("127.0.0.1", self.outbound, timeout=10)
        s.sendmail("ana@northwind.example", ["x@remote.example", "y@plain.example", "z@nonexistent.example"],
                   "Subject: via dns\r\nMessage-ID: <dns@northwind.example>\r\n\r\nhello\r\n")
        s.quit()
        self.until(lambda: any(b"<x@remote.example>" in m for m in self.mx1.messages()), "delivery by MX")
        self.until(lambda: any(b"<y@plain.example>" in m for m in self.mx2.messages()), "delivery to the implicit MX")
        self.assertFalse(any(b"y@plain.example" in m for m in self.mx1.messages()))
        query = 'subject:"Undelivered Mail Returned to Sender"'
        self.until(lambda: self.cli("search", query)["total"] == 1, "a DSN for the unknown domain")
        dsn = self.cli("search", query)["results"][0]
        raw = subprocess.run([BIN, "--data", self.data, "show", str(dsn["id"]), "--raw"], capture_output=True).stdout
        self.assertIn(b"Final-Recipient: rfc822; z@nonexistent.example", raw)
        self.assertIn(b"Status: 5.1.2", raw)
        with open(os.path.join(self.tmp, "serve.log")) as f:
            log = f.read()
        self.assertIn("delivered to=<x@remote.example> relay=mx1.remote.example[127.0.0.2]", log)
        self.assertIn("delivered to=<y@plain.example> relay=plain.example[127.0.0.3]", log)

    def test_at_most_the_address_limit_of_exchangers_is_tried(self):
        """api/dns.h mail_exchangers, delivery.mx_address_limit (5, as Postfix's smtp_mx_address_limit):
        of many.example's eight exchangers, the five best are tried (each refuses the connection) and
        the other three are neither tried nor looked up, the eighth included, though it would take the
        mail: a domain listing a hundred dead exchangers would otherwise cost a hundred connection
        timeouts a try. The mail stays queued for the next try."""
        s = smtplib.SMTP("127.0.0.1", self.outbound, timeout=10)
        s.sendmail("ana@northwind.example", ["x@many.example"],
                   "Subject: many exchangers\r\nMessage-ID: <many@northwind.example>\r\n\r\nhello\r\n")
        s.quit()
        self.until(lambda: self.cli("queue")["total"] == 1 and
                   self.cli("queue")["entries"][0]["recipients"][0]["attempts"] >= 2, "two tries")
        with open(os.path.join(self.tmp, "serve.log")) as f:
            log = f.read()
        for n in range(1, 6):
            self.assertIn(f"mx{n}.many.example[127.0.0.{20 + n}]", log, f"exchanger {n} tried")
        for n in range(6, 9):
            self.assertNotIn(f"mx{n}.many.example", log, f"exchanger {n} past the limit")
        self.assertEqual([m for m in self.mx1.messages() if b"many@northwind.example" in m], [])
        self.assertEqual(self.cli("queue")["entries"][0]["recipients"][0]["state"], "pending")

    def test_an_internationalised_domain_is_found_and_reached_in_a_labels(self):
        """SMTPUTF8 mail to ana@bücher.example: the MX is looked up by the domain's A-labels
        (xn--bcher-kva.example), and the exchanger, which does not offer SMTPUTF8 (smtp-sink), gets
        the address in that form, as Postfix sends it. A UTF-8 local part cannot be written so for
        it: that recipient bounces (5.6.7), once, with a DSN to the sender. Before, the lookup of the
        UTF-8 name found nothing and both bounced as an unknown domain."""
        import socket
        s = socket.create_connection(("127.0.0.1", self.outbound), timeout=10)
        f = s.makefile("rb")

        def reply():
            while True:
                line = f.readline()
                if line[3:4] != b"-":
                    return line

        reply()
        for cmd in ["EHLO client.northwind.example", "MAIL FROM:<ana@northwind.example> SMTPUTF8",
                    "RCPT TO:<ana@b\u00fccher.example>", "DATA"]:
            s.sendall(cmd.encode() + b"\r\n")
            self.assertIn(reply()[:1], (b"2", b"3"), cmd)
        s.sendall(b"Subject: idn\r\nMessage-ID: <idn@northwind.example>\r\n\r\nhello\r\n.\r\n")
        self.assertEqual(reply()[:3], b"250")
        for cmd in ["MAIL FROM:<ana@northwind.example> SMTPUTF8", "RCPT TO:<j\u00fcrgen@b\u00fccher.example>", "DATA"]:
            s.sendall(cmd.encode() + b"\r\n")
            self.assertIn(reply()[:1], (b"2", b"3"), cmd)
        s.sendall(b"Subject: idn local\r\nMessage-ID: <idn-local@northwind.example>\r\n\r\nhello\r\n.\r\n")
        self.assertEqual(reply()[:3], b"250")
        s.sendall(b"QUIT\r\n")
        s.close()
        self.until(lambda: any(b"<ana@xn--bcher-kva.example>" in m for m in self.mx1.messages()),
                   "delivery to the IDN domain's MX, in A-labels")
        dump = next(m for m in self.mx1.messages() if b"<ana@xn--bcher-kva.example>" in m)
        envelope = [line for line in dump.split(b"\n") if line.startswith((b"X-Mail-Args", b"X-Rcpt-Args"))]
        self.assertTrue(envelope, dump[:600])
        self.assertFalse(any(b"\xc3" in line or b"SMTPUTF8" in line for line in envelope), envelope)
        query = 'subject:"Undelivered Mail Returned to Sender"'
        self.until(lambda: self.cli("search", query)["total"] == 1, "a DSN for the UTF-8 local part")
        dsn = self.cli("search", query)["results"][0]
        raw = subprocess.run([BIN, "--data", self.data, "show", str(dsn["id"]), "--raw"], capture_output=True).stdout
        self.assertIn(b"Status: 5.6.7", raw)
        self.assertNotIn(b"<ana@", raw.split(b"Final-Recipient")[1] if b"Final-Recipient" in raw else b"")


if __name__ == "__main__":
    unittest.main()
