"""`mailark import` beside a running `mailark serve`: the import hands its messages to the server over
DATA/import.sock (engine/handoff.h, api/import_socket.h), which scans and archives them with the
signatures it has loaded, while SMTP mail keeps arriving. Real server, real CLI, generated mailboxes
(no corpus needed)."""
import imaplib
import json
import os
import signal
import smtplib
import socket
import stat
import struct
import subprocess
import time
import unittest

from harness import BIN, EICAR, Server, free_port, scratch
from test_failures import config  # an inbound listener on loopback, no primary


def message(n, subject=None, body=None):
    subject = subject or f"handed {n}"
    body = body or f"message number {n} of the handed mailbox\n"
    return (f"From: sender{n % 7}@old.example\nTo: ana@example.com\nSubject: {subject}\n"
            f"Message-ID: <handed.{n}@old.example>\nDate: Mon, 2 Jan 2006 10:00:00 +0000\n\n{body}")


def write_mbox(path, messages):
    with open(path, "w") as f:
        for m in messages:
            f.write("From sender@old.example Mon Jan  2 10:00:00 2006\n")
            f.write(m if m.endswith("\n") else m + "\n")
            f.write("\n")


def send(port, subject):
    s = smtplib.SMTP("127.0.0.1", port, timeout=60)
    try:
        s.sendmail("someone@outside.example", ["ana@example.com"],
                   f"From: someone@outside.example\r\nTo: ana@example.com\r\nSubject: {subject}\r\n\r\nhi\r\n")
        return 250
    except smtplib.SMTPResponseException as e:
        return e.smtp_code
    finally:
        s.quit()


def records(srv):
    """The archive's records, after `verify` found the chain intact."""
    v = srv.cli("verify")
    assert v["intact"], v
    return v["records_checked"]


def frame(kind, *fields):
    out = kind.encode() + bytes([len(fields)])
    for f in fields:
        f = f.encode() if isinstance(f, str) else f
        out += struct.pack("<Q", len(f)) + f
    return out


def converse(path, data):
    """Connects to the import socket, sends `data`, reads to the end; the frames read, as (kind, fields)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(60)
        s.connect(path)
        try:  # the server may have said no and closed before it is all sent
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except BrokenPipeError:
            pass
        got = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:  # the server closed with our bytes unread: all it sent came first
                break
            if not chunk:
                break
            got += chunk
    frames = []
    while got:
        kind, count = chr(got[0]), got[1]
        got = got[2:]
        fields = []
        for _ in range(count):
            (n,) = struct.unpack("<Q", got[:8])
            fields.append(got[8:8 + n])
            got = got[8 + n:]
        frames.append((kind, fields))
    return frames


def as_user(uid, fn):
    """fn() run in a child process as `uid` (and its group; no other groups): what it returned, as
    JSON carries it, or the repr of what it raised."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.write(write_end, json.dumps(fn()).encode())
        except BaseException as e:  # noqa: BLE001 -- the parent reports it
            os.write(write_end, json.dumps(repr(e)).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as r:
        said = json.loads(r.read() or b"null")
    os.waitpid(pid, 0)
    return said


class ImportHandoffTest(unittest.TestCase):
    def setUp(self):
        self.tmp = scratch("mailark-handoff-")
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.cleanup()

    def server(self, extra=""):
        port = free_port()
        srv = Server(config(port, extra=extra)).start()
        srv.port = port
        self.servers.append(srv)
        return srv

    def importing(self, srv, *args):
        p = srv.run("import", "--json", *args, timeout=300)
        return p, (json.loads(p.stdout) if p.stdout.strip() else None)

    def test_an_import_beside_the_server_is_scanned_and_archived_by_it(self):
        srv = self.server()
        sock = os.path.join(srv.data, "import.sock")
        mode = os.stat(sock).st_mode
        self.assertTrue(stat.S_ISSOCK(mode))
        self.assertEqual(stat.S_IMODE(mode), 0o600)  # the server's user (and root) only

        mbox = os.path.join(self.tmp, "old.mbox")
        msgs = [message(n) for n in range(300)]
        msgs.append(message(300, "the virus", f"{EICAR}\n"))
        write_mbox(mbox, msgs)
        self.assertEqual(send(srv.port, "before the import"), 250)
        p, out = self.importing(srv, mbox, "--custodian", "Ana Lee")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(out["handed_to_server"])
        self.assertEqual(out["messages"], 301)
        self.assertEqual(out["imported"], 301)
        self.assertEqual(out["infected"], 1)  # the server's signatures found it
        self.assertEqual(out["errors"], 0)
        self.assertEqual(out["archive_head"], 302)  # the SMTP message and every handed one
        self.assertEqual(send(srv.port, "after the import"), 250)  # the door kept working

        self.assertEqual(srv.wait_for("subject:handed", 300)["total"], 300)
        # In the mailbox's order, as a lone import (engine/ingest.h preserve_order): the n-th message
        # got the n-th id after the SMTP message's.
        handed = sorted((r["id"], r["subject"]) for r in srv.cli("search", "subject:handed", "--limit", "300")["results"])
        self.assertEqual(handed, [(n + 2, f"handed {n}") for n in range(300)])
        infected = srv.search("verdict:infected")
        self.assertEqual([r["subject"] for r in infected["results"]], ["the virus"])
        self.assertEqual(infected["results"][0]["id"], 302)
        shown = srv.cli("show", str(infected["results"][0]["id"]))
        self.assertEqual(shown["envelope"]["direction"], "import")
        self.assertEqual(shown["envelope"]["custodian"], "Ana Lee")
        self.assertTrue(shown["envelope"]["source"].startswith(mbox + "#"))
        log = srv.server_log()
        self.assertIn("import: ended: 301 messages handed, 301 archived, 0 duplicates", log)
        self.assertNotIn("is in use by", p.stderr.decode())

        # The same import again: everything is a duplicate; nothing is archived twice. The reserve is
        # the server's: an import's own is said to be set aside, not silently dropped.
        conf = os.path.join(self.tmp, "import.toml")
        with open(conf, "w") as f:
            f.write("[limits]\ndisk_reserve_bytes = 0\n")
        p, out = self.importing(srv, mbox, "--custodian", "Ana Lee", "--disk-reserve", "0", "--config", conf)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual((out["imported"], out["duplicates"]), (0, 301))
        self.assertEqual(records(srv), 303)
        self.assertIn(b"--disk-reserve is not used: the running server keeps its own reserve", p.stderr)
        self.assertIn(b"--config is not used: the running server scans and archives by its own configuration", p.stderr)

        # Options the server cannot honour are refused, not ignored.
        p, _ = self.importing(srv, mbox, "--no-scan")
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(b"--no-scan: `mailark serve` runs on this data folder", p.stderr)
        self.assertNotIn("stopped taking the import", srv.server_log())  # it said it was done, with nothing

    def test_the_servers_message_limit_bounds_the_handed_import(self):
        srv = self.server("[limits]\nmessage_bytes = 200000\n")
        maildir = os.path.join(self.tmp, "md")
        for d in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(maildir, d))
        with open(os.path.join(maildir, "cur", "1.small:2,S"), "w") as f:
            f.write(message(1))
        with open(os.path.join(maildir, "cur", "2.large:2,S"), "w") as f:
            f.write(message(2, "too large", "x" * 300000 + "\n"))
        with open(os.path.join(maildir, "cur", "3.small:2,S"), "w") as f:
            f.write(message(3))
        p, out = self.importing(srv, maildir)
        self.assertEqual(p.returncode, 0, p.stderr)  # one message refused is an error, not a stop
        self.assertEqual((out["imported"], out["errors"]), (2, 1))
        self.assertIn("2.large", out["error_files"][0]["path"])
        self.assertEqual(srv.wait_for("subject:handed", 2)["total"], 2)

    def test_a_server_stopped_midway_loses_nothing_and_the_import_goes_on_when_run_again(self):
        srv = self.server()
        mbox = os.path.join(self.tmp, "big.mbox")
        n = 6000
        write_mbox(mbox, [message(i, body=f"message number {i}\n" + "some words of a longer body\n" * 40)
                          for i in range(n)])
        first = subprocess.Popen([BIN, "--data", srv.data, "import", "--json", mbox], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        # Some of it archived, then the import is paused (SIGSTOP) so that the server surely stops
        # in its middle, whatever this machine's speed.
        deadline = time.time() + 120
        while srv.cli("stats")["archive_head"] < 100 and time.time() < deadline:
            time.sleep(0.02)
        first.send_signal(signal.SIGSTOP)
        # One import at a time: a second is told to wait, and the first goes on.
        p, _ = self.importing(srv, mbox)
        self.assertEqual(p.returncode, 5, p.stderr)
        self.assertIn(b"another import is being handed to this server now", p.stderr)
        self.assertEqual(srv.stop(), 0)  # the server stops while the import is in its middle
        first.send_signal(signal.SIGCONT)
        out, err = first.communicate(timeout=120)
        self.assertEqual(first.returncode, 1, err)
        # Told the server stopped ("the server is stopping"), or, when the paused import had more
        # results unread than the socket holds and the server gave up on it, that the server ended it.
        self.assertRegex(err, rb"the server is stopping|the server ended the import before it had reported")
        self.assertIn(b"Run the same import again", err)
        got = json.loads(out)
        self.assertLess(got["imported"], n)  # it was stopped midway...
        self.assertGreater(got["imported"], 0)
        # ...and everything it reported archived is in the archive, in a consistent chain (more may
        # be: results the paused import did not read before the server gave up on it).
        srv2 = Server(config(srv.port), data=srv.data).start()
        self.servers.append(srv2)
        archived = records(srv2)
        self.assertGreaterEqual(archived, got["imported"])
        self.assertLess(archived, n)
        p, again = self.importing(srv2, mbox)
        self.assertEqual(p.returncode, 0, p.stderr)
        # Nothing lost, nothing twice: what the first run archived (reported or not) is a duplicate now.
        self.assertEqual((again["imported"], again["duplicates"]), (n - archived, archived))
        self.assertEqual(records(srv2), n)
        self.assertEqual(srv2.wait_for("subject:handed", n, 120)["total"], n)

    def test_an_import_that_dies_or_speaks_nonsense_frees_the_server_for_the_next(self):
        srv = self.server()
        mbox = os.path.join(self.tmp, "some.mbox")
        write_mbox(mbox, [message(i) for i in range(2000)])
        killed = subprocess.Popen([BIN, "--data", srv.data, "import", mbox], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while "is handing messages to the server" not in srv.server_log() and time.time() < deadline:
            time.sleep(0.05)
        killed.send_signal(signal.SIGKILL)
        killed.wait()

        # A client that sends what is not a frame, then one that sends a frame larger than the limit:
        # each is told why (a stop frame) and given the end, and the server goes on.
        for junk in (b"GET / HTTP/1.1\r\n\r\n", b"m\x07" + struct.pack("<Q", 1 << 40)):
            deadline = time.time() + 60
            while True:  # the killed import's messages may still be finishing: "wait" until free
                frames = converse(os.path.join(srv.data, "import.sock"), junk)
                if frames[0][0] != "s" or time.time() > deadline:
                    break
                time.sleep(0.2)
            self.assertEqual([k for k, _ in frames], ["h", "s", "x"], frames)
        self.assertIn("stopped taking the import", srv.server_log())

        deadline = time.time() + 60
        while True:
            p, out = self.importing(srv, mbox)
            if p.returncode != 5 or time.time() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(out["imported"] + out["duplicates"], 2000)
        self.assertEqual(records(srv), 2000)
        self.assertEqual(send(srv.port, "still serving"), 250)

    def test_a_mailbox_handed_for_its_owner_is_in_their_inbox_over_imap(self):
        imap_port = free_port()
        srv = self.server(f'[[listener]]\nname = "imap"\nrole = "imap"\naddress = "127.0.0.1"\n'
                          f'port = {imap_port}\ntls = "none"\n')
        srv.add_user("alice@example.com", "alice-pw")
        mbox = os.path.join(self.tmp, "alice.mbox")
        write_mbox(mbox, [message(i) for i in range(20)])
        p, out = self.importing(srv, mbox, "--owner", "Alice@Example.com")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual((out["imported"], out["handed_to_server"]), (20, True))
        m = imaplib.IMAP4("127.0.0.1", imap_port, timeout=30)
        m.login("alice@example.com", "alice-pw")
        deadline = time.time() + 30
        while True:  # the server places new records in folders every half second
            typ, data = m.select("INBOX")
            if int(data[0]) >= 20 or time.time() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(int(data[0]), 20)
        typ, data = m.fetch("1:*", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        subjects = sorted(part[1].decode().strip() for part in data if isinstance(part, tuple))
        self.assertEqual(subjects, sorted(f"Subject: handed {i}" for i in range(20)))
        m.logout()

    def test_a_server_trains_a_dictionary_for_an_archive_without_one(self):
        srv = self.server("train_dictionary_after = 200\n")  # in [archive]
        words = ("gas power meeting contract price deal desk trading schedule report market west "
                 "pipeline capacity storage forecast energy credit risk legal review").split()

        def batch(first, count):
            path = os.path.join(self.tmp, f"batch{first}.mbox")
            write_mbox(path, [message(i, body=" ".join(words[(i * 7 + k) % len(words)] for k in range(300)) + "\n")
                              for i in range(first, first + count)])
            return path

        stats = srv.cli("stats")
        self.assertEqual(stats["dictionary"], 0)  # a new data folder has none
        p, out = self.importing(srv, batch(0, 300))
        self.assertEqual((p.returncode, out["imported"]), (0, 300), p.stderr)
        deadline = time.time() + 60
        while srv.cli("stats")["dictionary"] == 0:
            self.assertLess(time.time(), deadline, srv.server_log()[-2000:])
            time.sleep(0.2)
        self.assertIn("compression dictionary 1 trained from the newest 200 messages", srv.server_log())
        before = srv.cli("stats")
        p, out = self.importing(srv, batch(300, 300))
        self.assertEqual((p.returncode, out["imported"]), (0, 300), p.stderr)
        after = srv.cli("stats")
        first = before["compressed_bytes"]
        second = after["compressed_bytes"] - before["compressed_bytes"]
        self.assertLess(second, 0.8 * first, (first, second))  # the same kind of mail, smaller with it
        self.assertEqual(records(srv), 600)  # both kinds read back, checked against their hashes
        srv.stop()
        self.assertEqual(records(srv), 600)

    def test_a_handed_import_stops_at_the_servers_disk_reserve(self):
        # The room the server keeps on its disk (limits.disk_reserve_bytes) is kept from a handed
        # import as from the SMTP door: here more than any disk has, so nothing is taken.
        srv = self.server("[limits]\ndisk_reserve_bytes = 1125899906842624\n")
        mbox = os.path.join(self.tmp, "small.mbox")
        write_mbox(mbox, [message(i) for i in range(5)])
        p, out = self.importing(srv, mbox)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(b"less free space than the server keeps (limits.disk_reserve_bytes)", p.stderr)
        self.assertTrue(out["handed_to_server"], out)
        self.assertEqual(out["imported"], 0, out)
        self.assertEqual(srv.cli("stats")["archive_head"], 0)
        self.assertEqual(send(srv.port, "refused too"), 452)  # the SMTP door says the same
        # The server is free for the next import once the first is stopped.
        p2, _ = self.importing(srv, mbox)
        self.assertIn(b"limits.disk_reserve_bytes", p2.stderr)
        self.assertNotIn(b"another import is being handed", p2.stderr)

    def test_the_index_a_server_writes_is_compacted_once_mail_stops(self):
        # A server commits its index every interval (100 ms here), which leaves a shard written that
        # way about twice its compact size; it compacts each live shard as it grows and once mail
        # stops arriving (IndexWriter::compact_if_grown). 9,000 messages of varied words make shards
        # past the 4 MiB below which none is compacted.
        srv = self.server()
        import random
        rnd = random.Random(7)
        vocabulary = [f"w{k}x" for k in range(6000)]
        n = 9000
        mbox = os.path.join(self.tmp, "varied.mbox")
        write_mbox(mbox, [message(i, body=" ".join(rnd.choice(vocabulary) for _ in range(80)) + "\n")
                          for i in range(n)])
        p, out = self.importing(srv, mbox)
        self.assertEqual((p.returncode, out["imported"]), (0, n), p.stderr)
        self.assertEqual(srv.wait_for("subject:handed", n, 120)["total"], n)
        index = os.path.join(srv.data, "index")
        # shardN alone: shardN.compacting is a compaction's copy, there while one runs.
        import re
        shards = sorted(d for d in os.listdir(index) if re.fullmatch(r"shard\d+", d))
        self.assertEqual(len(shards), 2)

        def size(path):
            return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))

        def compact_size(path):
            copy = os.path.join(self.tmp, "compact-copy")
            subprocess.run(["rm", "-rf", copy], check=True)
            subprocess.run(["xapian-compact", "--no-renumber", path, copy], check=True, stdout=subprocess.DEVNULL)
            return size(copy)

        # Bounded wait: the server compacts each shard within a commit interval of the import's end,
        # unless it was compacted so late in the import that it is less than a quarter (and 1 MiB)
        # over that size now (the rule: IndexWriter::compact_if_grown). Never compacted, the shards
        # are more than twice their compact size.
        deadline = time.time() + 60
        for shard in shards:
            path = os.path.join(index, shard)
            while True:
                have, compact = size(path), compact_size(path)
                if have <= compact * 1.25 + (1 << 20):
                    break
                self.assertLess(time.time(), deadline, (shard, have, compact, srv.server_log()[-2000:]))
                time.sleep(0.5)
            self.assertGreater(compact, 2 << 20, shard)
            # The old shard, swapped out, is removed right after the swap.
            while os.path.exists(path + ".compacting"):
                self.assertLess(time.time(), deadline, shard)
                time.sleep(0.1)
        self.assertRegex(srv.server_log(), r"index shard 0 compacted: \d+ KiB to \d+ KiB")
        self.assertRegex(srv.server_log(), r"index shard 1 compacted: \d+ KiB to \d+ KiB")
        # The same documents at the same ids: every message found, a word of one message finds it.
        self.assertEqual(srv.cli("search", "subject:handed")["total"], n)
        hit = srv.cli("search", "subject:\"handed 8321\"")
        self.assertEqual(hit["total"], 1, hit)
        self.assertEqual(records(srv), n)
        srv.stop()
        self.assertEqual(srv.cli("search", "subject:handed")["total"], n)

    def test_an_import_that_stops_reading_never_holds_the_servers_shutdown(self):
        srv = self.server()
        n = 4000  # results of more than a socket's buffer holds
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(os.path.join(srv.data, "import.sock"))
            for i in range(n):
                s.sendall(frame("m", f"stuck#{i}", message(i), "0", "", "", "", ""))
            s.sendall(frame("x"))
            # The client reads nothing: the server's writer waits on it, while the archive has it all.
            deadline = time.time() + 120
            while f"import: ended: {n} messages handed, {n} archived" not in srv.server_log():
                self.assertLess(time.time(), deadline, srv.server_log()[-2000:])
                time.sleep(0.1)
            self.assertEqual(srv.stop(), 0)  # within the harness's 60 s, not killed
            self.assertIn("stopped", srv.server_log().splitlines()[-1])
        srv2 = Server(config(srv.port), data=srv.data).start()
        self.servers.append(srv2)
        self.assertEqual(records(srv2), n)

    @unittest.skipUnless(os.geteuid() == 0, "needs root, to connect as another user (nobody)")
    def test_another_users_client_is_refused_even_through_a_socket_opened_to_all(self):
        srv = self.server()
        sock = os.path.join(srv.data, "import.sock")
        self.assertEqual(stat.S_IMODE(os.stat(sock).st_mode), 0o600, "only the server's user may connect")
        # The socket's mode is the first door; the server also asks the kernel who connected
        # (SO_PEERCRED, api/import_socket.cc), so a socket opened to all (an administrator's chmod)
        # still lets no other user hand it mail.
        os.chmod(sock, 0o666)
        for d in (srv.tmp, srv.data):
            os.chmod(d, 0o711)
        nobody = 65534

        def intrude():  # nobody sends a message and reads what the server says
            frames = converse(sock, frame("m", "intruder#1", message(1, "from another user"), "0", "", "", "",
                                          "") + frame("x"))
            return [[k, [f.decode() for f in fs]] for k, fs in frames]

        said = as_user(nobody, intrude)
        self.assertEqual(said, [["s", ["only the server's own user (or root) may hand it an import"]]], said)
        self.assertIn(f"refused a client of uid {nobody}", srv.server_log())
        self.assertEqual(records(srv), 0, "nothing of the refused client's was archived")
        # The server's own user still imports.
        mbox = os.path.join(self.tmp, "own.mbox")
        write_mbox(mbox, [message(i) for i in range(3)])
        p, out = self.importing(srv, mbox)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(out["imported"], 3)

    def test_the_index_socket_answers_only_the_servers_user(self):
        """DATA/index.sock (engine/handoff.h): a reader in another process has the server commit what
        it archived before it searches. The same access rule as import.sock: mode 0600, and the
        kernel's word on the peer, so a socket opened to all still answers no other user."""
        srv = self.server()
        sock = os.path.join(srv.data, "index.sock")
        self.assertEqual(stat.S_IMODE(os.stat(sock).st_mode), 0o600)

        def ask():
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                c.settimeout(30)
                c.connect(sock)
                said = b""
                while not said.endswith(b"\n"):
                    got = c.recv(256)
                    if not got:
                        break
                    said += got
                return said.decode()

        self.assertEqual(ask(), "current\n")
        os.chmod(sock, 0o666)
        for d in (srv.tmp, srv.data):
            os.chmod(d, 0o711)
        said = as_user(65534, ask)
        self.assertEqual(said, "behind: only the server's own user (or root) may ask it\n")
        self.assertEqual(ask(), "current\n", "the server's own user is still answered")

if __name__ == "__main__":
    unittest.main()
