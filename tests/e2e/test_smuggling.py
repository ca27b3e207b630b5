"""SMTP smuggling against the real server: every end-of-data variant (a lone dot between line ends
that are not both CRLF), with a whole second transaction smuggled behind it and QUIT pipelined after
the real end, on the inbound and the outbound listener, in plaintext, after STARTTLS and on implicit
TLS, in the default "reject" mode and in "normalize" mode.

What must hold: the smuggled MAIL FROM is never answered as a command, nothing is archived for the
smuggled envelope, and each session yields exactly one message (normalize) or a 550 refusal
(reject, whenever a bare line end was sent).
"""
import itertools
import unittest

from harness import Server, free_port, read_replies, smtp_connect

ENDS = ["\n", "\r", "\r\n", "\r\r\n", "\n\r", "\r\r", "\n\n", ""]


def variants():
    out = []
    for before, after in itertools.product(ENDS, ENDS):
        dot = "body" + before + "." + after
        if "\r\n.\r\n" not in dot:  # that one is a real end of data
            out.append(dot)
    return out


def has_bare_line_end(s):
    for i, c in enumerate(s):
        if c == "\r" and (i + 1 >= len(s) or s[i + 1] != "\n"):
            return True
        if c == "\n" and (i == 0 or s[i - 1] != "\r"):
            return True
    return False


class SmugglingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.ports = {name: free_port() for name in ("mx", "mx-tls", "out", "mx-normalize")}
        cls.server = Server(f"""
[server]
hostname = "mx.test.example"

[[listener]]
name = "mx"
role = "inbound"
port = {cls.ports["mx"]}
tls = "starttls"

[[listener]]
name = "mx-tls"
role = "inbound"
port = {cls.ports["mx-tls"]}
tls = "implicit"

[[listener]]
name = "out"
role = "outbound"
port = {cls.ports["out"]}
tls = "starttls"

[[listener]]
name = "mx-normalize"
role = "inbound"
port = {cls.ports["mx-normalize"]}
tls = "starttls"
bare_newline = "normalize"

[inbound]
domains = ["example.com"]
verify_recipients = "none"

[outbound]
networks = ["127.0.0.0/8"]

[delivery]
smarthost = ["127.0.0.1:{free_port()}"]

""").start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.server.stop()
        cls.server.cleanup()
        assert rc == 0, rc

    def attempt(self, listener, tls_mode, dot):
        """One session with the smuggling payload; returns the reply codes after DATA's 354."""
        sock = smtp_connect(self.ports[listener], tls_mode)
        try:
            sock.sendall(b"EHLO client.test.example\r\n")
            read_replies(sock, 1)
            sock.sendall(b"MAIL FROM:<a@sender.example>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
            codes, _ = read_replies(sock, 3)
            self.assertEqual(codes, ["250", "250", "354"])
            payload = ("Subject: smuggling\r\n\r\n" + dot +
                       "MAIL FROM:<smuggled@evil.example>\r\nRCPT TO:<smuggled-rcpt@example.com>\r\nDATA\r\n"
                       "Subject: smuggled\r\n\r\nsmuggled\r\n.\r\nQUIT\r\n")
            sock.sendall(payload.encode())
            codes, text = read_replies(sock, 5)
            return codes, text
        finally:
            sock.close()

    def test_every_variant_on_every_listener_and_transport(self):
        expected_stored = 0
        cases = [("mx", "none"), ("mx", "starttls"), ("mx-tls", "implicit"), ("out", "none"),
                 ("out", "starttls"), ("mx-normalize", "none"), ("mx-normalize", "starttls")]
        for listener, tls_mode in cases:
            for dot in variants():
                with self.subTest(listener=listener, tls=tls_mode, dot=repr(dot)):
                    codes, text = self.attempt(listener, tls_mode, dot)
                    self.assertEqual(codes[-1:], ["221"], text)
                    self.assertEqual(len(codes), 2, f"one reply for the message, one for QUIT: {text!r}")
                    if listener != "mx-normalize" and has_bare_line_end(dot):
                        self.assertEqual(codes[0], "550", text)
                        self.assertIn("5.5.2 Error: bare <", text)
                    else:
                        self.assertEqual(codes[0], "250", text)
                        expected_stored += 1
        # Nothing was ever archived for the smuggled envelope; every stored message is the outer one.
        self.assertEqual(self.server.search("rcpt:smuggled-rcpt@example.com")["total"], 0)
        res = self.server.wait_for("subject:smuggling", expected_stored)
        self.assertEqual(res["total"], expected_stored)
        self.assertEqual(self.server.search("subject:smuggled")["total"], 0)

    def test_bare_newline_in_a_command_never_starts_another(self):
        sock = smtp_connect(self.ports["mx"], "none")
        try:
            sock.sendall(b"EHLO c.example\r\nNOOP\nMAIL FROM:<x@sender.example>\r\nRSET\rQUIT\r\nQUIT\r\n")
            codes, text = read_replies(sock, 4)
        finally:
            sock.close()
        self.assertEqual(codes, ["250", "550", "550", "221"], text)


if __name__ == "__main__":
    unittest.main()
