"""Dovecot's imaptest against mailark's IMAP server: its scripted compliance tests (all 71 groups pass)
and its stress mode (50 clients, 60 seconds, no error). imaptest comes from ../shared/tools/imaptest
(built once with its build.sh into the build folder); without it the tests say they were skipped, and
why."""
import os
import re
import subprocess
import tempfile
import unittest

from harness import BIN, Server, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
TOOL = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "tools", "imaptest"))
OUT = os.environ.get("MAILARK_IMAPTEST_OUT", os.path.join(tempfile.gettempdir(), "mailark-imaptest"))
DEMO = os.path.normpath(os.path.join(HERE, "..", "..", "demo", "mailbox.mbox"))


def build_imaptest():
    binary = os.path.join(OUT, "imaptest")
    if os.path.exists(binary) and os.path.isdir(os.path.join(OUT, "tests")):
        return binary
    if not os.path.exists(os.path.join(TOOL, "build.sh")):
        raise unittest.SkipTest(f"imaptest not found at {TOOL} (../shared/tools/imaptest)")
    # The source tree has no version file and no .git: its version script wants one from the outside.
    env = dict(os.environ, VERSION=os.environ.get("VERSION", "0.0.0"))
    p = subprocess.run(["sh", os.path.join(TOOL, "build.sh"), OUT], capture_output=True, timeout=600, env=env)
    if p.returncode != 0:
        raise AssertionError("building imaptest failed: " + (p.stdout + p.stderr).decode(errors="replace")[-3000:])
    return binary


class ImaptestTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.imaptest = build_imaptest()
        cls.mx, cls.imap = free_port(), free_port()
        cls.server = Server(f"""
[inbound]
domains = ["example.com"]
[imap]
sessions_per_ip = 200
[[listener]]
role = "inbound"
port = {cls.mx}
[[listener]]
role = "imap"
port = {cls.imap}
tls = "starttls"
""", wait_port=cls.imap)
        for user in ("compliance@example.com", "stress@example.com"):
            p = subprocess.run([BIN, "--data", cls.server.data, "user", "add", user, "--password-stdin"],
                               input=b"pw\n", capture_output=True, timeout=60)
            assert p.returncode == 0, p.stderr
        cls.server.start()
        # The demo mailbox without its EICAR sample: imaptest appends these over and over, and an
        # infected APPEND is (rightly) refused.
        cls.mbox = os.path.join(cls.server.tmp, "clean.mbox")
        with open(DEMO, "rb") as f:
            messages = re.split(rb"(?m)^(?=From )", f.read())
        with open(cls.mbox, "wb") as f:
            f.write(b"".join(m for m in messages if b"EICAR" not in m and b"WDVPIVAlQEFQ" not in m))

    @classmethod
    def tearDownClass(cls):
        cls.server.cleanup()

    def run_imaptest(self, *args, timeout):
        return subprocess.run([self.imaptest, "host=127.0.0.1", f"port={self.imap}", "pass=pw", *args],
                              capture_output=True, timeout=timeout, cwd=os.path.dirname(self.imaptest))

    def test_scripted_compliance(self):
        p = self.run_imaptest("user=compliance@example.com", f"mbox={self.mbox}",
                              "test=" + os.path.join(os.path.dirname(self.imaptest), "tests"), timeout=600)
        out = p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")
        m = re.search(r"(\d+) test groups: (\d+) failed, (\d+) skipped", out)
        self.assertIsNotNone(m, out[-3000:])
        self.assertEqual(int(m.group(2)), 0, out[-6000:])
        self.assertEqual(int(m.group(3)), 0, "no group skipped for a missing capability")
        self.assertGreaterEqual(int(m.group(1)), 71, out[-3000:])
        self.assertNotIn("Unexpected disconnection", out)

    def test_stress_fifty_clients_for_sixty_seconds(self):
        p = self.run_imaptest("user=stress@example.com", f"mbox={self.mbox}", "secs=60", "clients=50", timeout=300)
        out = p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")
        errors = [l for l in out.splitlines() if "Error" in l or "BAD" in l or "disconnect" in l.lower()]
        self.assertEqual(errors, [], "\n".join(errors[:30]))
        self.assertIn("Totals:", out)
        # The server is still serving, and the archive intact.
        v = subprocess.run([BIN, "--data", self.server.data, "verify"], capture_output=True, timeout=300)
        self.assertEqual(v.returncode, 0, v.stdout + v.stderr)


if __name__ == "__main__":
    unittest.main()
