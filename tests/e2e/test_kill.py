"""Crash test: SIGKILL `mailark serve` in the middle of a load of 32 concurrent SMTP sessions.

Every message that got a 250 must be in the archive after the restart and must reach the primary
server (Postfix's smtp-sink). A message can reach the primary twice only if its delivery was in flight
at the kill (delivered, but the kill came before the queue committed the result); the test counts
those.
"""
import json
import os
import shutil
import signal
import smtplib
import subprocess
import tempfile
import threading
import time
import unittest

from test_delivery import BIN, SINK, Sink, free_port, wait_port

SESSIONS = 32
PER_SESSION = 100
CONNECTIONS_PER_DESTINATION = 4
# The documented bound (api/smtp/delivery.h, "Duplicates after a crash"): the delivery agent
# commits results in groups of up to 32 (plus one per connection that passed the check together),
# one group commit at a time while the next group gathers, and each connection has one message in
# transfer: 2 x 32 + 3 x connections. (This test said 32 + connections, one group only, and failed
# in CI with 49.)
MAX_IN_FLIGHT = 2 * 32 + 3 * CONNECTIONS_PER_DESTINATION


@unittest.skipUnless(os.path.exists(SINK), "Postfix's smtp-sink is not installed (bash scripts/setup.sh)")
class KillTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mailark-kill-")
        self.data = os.path.join(self.tmp, "data")
        self.mx, self.primary = free_port(), free_port()
        self.cfg = os.path.join(self.tmp, "mailark.toml")
        with open(self.cfg, "w") as f:
            f.write(f"""
[[listener]]
role = "inbound"
port = {self.mx}
tls = "none"
[inbound]
domains = ["example.com"]
[limits]
sessions_per_ip = 64
[delivery]
primary = ["127.0.0.1:{self.primary}"]
retry_schedule = [1]
connections_per_destination = {CONNECTIONS_PER_DESTINATION}
""")
        sink_dir = os.path.join(self.tmp, "sink", "d")
        os.makedirs(os.path.dirname(sink_dir))
        os.chmod(self.tmp, 0o755)  # smtp-sink runs as nobody and must reach its folder
        self.sink = Sink(self.primary, sink_dir)
        self.logs = []

    def tearDown(self):
        for p in getattr(self, "procs", []):
            if p.poll() is None:
                p.kill()
        self.sink.stop()
        for f in self.logs:
            f.close()
        if os.environ.get("MAILARK_KEEP"):
            print("kept", self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def start(self):
        log = open(os.path.join(self.tmp, f"serve{len(self.logs)}.log"), "wb")
        self.logs.append(log)
        p = subprocess.Popen([BIN, "--data", self.data, "serve", "--config", self.cfg], stdout=log,
                             stderr=subprocess.STDOUT)
        self.procs = getattr(self, "procs", []) + [p]
        wait_port(self.mx, p, "mailark serve")
        return p

    def cli(self, *args):
        p = subprocess.run([BIN, "--data", self.data, *args, "--json"], capture_output=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        return json.loads(p.stdout)

    def test_every_acknowledged_message_survives_a_kill_and_is_delivered(self):
        server = self.start()
        acked, lock = set(), threading.Lock()

        def session(n):
            try:
                s = smtplib.SMTP("127.0.0.1", self.mx, timeout=30)
                s.ehlo(f"load{n}.example")
                for i in range(PER_SESSION):
                    mid = f"kill-{n}-{i}@load.example"
                    s.sendmail("load@sender.example", ["bob@example.com"],
                               f"Subject: load {n} {i}\r\nMessage-ID: <{mid}>\r\n\r\nmessage {i} of session {n}\r\n")
                    with lock:
                        acked.add(mid)
                s.quit()
            except (smtplib.SMTPException, OSError):
                pass  # the kill: whatever had no 250 yet was never acknowledged

        threads = [threading.Thread(target=session, args=(n,)) for n in range(SESSIONS)]
        for t in threads:
            t.start()
        deadline = time.time() + 60
        while len(acked) < SESSIONS * PER_SESSION // 2 and time.time() < deadline:
            time.sleep(0.01)
        server.send_signal(signal.SIGKILL)
        server.wait()
        for t in threads:
            t.join(timeout=60)
        killed_at = len(acked)
        self.assertGreater(killed_at, 0)
        self.assertLess(killed_at, SESSIONS * PER_SESSION, "the kill came in the middle of the load")

        self.start()  # restart on the same data folder: index catch-up, queue resumes
        deadline = time.time() + int(os.environ.get('MAILARK_DRAIN_SECONDS', '180'))
        while self.cli("queue")["total"] > 0:
            self.assertLess(time.time(), deadline, "the queue did not drain after the restart")
            time.sleep(0.5)

        archived = {r["message_id"] for r in self.cli("search", "direction:inbound", "--limit", "100000")["results"]}
        self.assertEqual(acked - archived, set(), "a 250 was given for a message that is not in the archive")
        self.assertTrue(self.cli("verify")["intact"])

        delivered = {}
        for m in self.sink.messages():
            for line in m.split(b"\n"):
                if line.lower().startswith(b"message-id:"):
                    mid = line.split(b"<", 1)[1].split(b">", 1)[0].decode()
                    delivered[mid] = delivered.get(mid, 0) + 1
        self.assertEqual(acked - set(delivered), set(), "an acknowledged message never reached the primary")
        duplicates = sum(c - 1 for c in delivered.values())
        print(f"\nkill test: {killed_at} acknowledged before the kill, {len(archived)} archived, "
              f"{len(delivered)} delivered, {duplicates} delivered twice")
        self.assertLessEqual(duplicates, MAX_IN_FLIGHT, "only deliveries in flight at the kill may be repeated")


if __name__ == "__main__":
    unittest.main()
