"""Shared pieces of the end-to-end tests: a real `mailark serve` started on loopback ports the test
picks, with its own data folder and configuration, and the CLI run against the same data folder."""
import atexit
import json
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

BIN = os.environ.get("MAILARK_BIN", "mailark")
# ../shared/corpus: MAILARK_CORPUS (set by the user) wins over the build's default (set by ctest).
CORPUS = (os.environ.get("MAILARK_CORPUS") or os.environ.get("MAILARK_DEFAULT_CORPUS")
          or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "corpus"))
DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"


def dnsmasq(port, *records):
    """A DNS server on 127.0.0.1:port answering only from `records` (dnsmasq options such as
    "--mx-host=example.com,mx.example.com,10"); nothing is forwarded. Returns the process."""
    cmd = [DNSMASQ, "-k", "--port", str(port), "--listen-address=127.0.0.1", "--bind-interfaces",
           "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--pid-file=", *records]
    if os.geteuid() == 0:
        cmd.insert(2, "--user=root")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    return proc
EICAR = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def scratch(prefix):
    """A fresh folder under $TMPDIR, removed when the test process exits (a test that fails or
    never cleans up leaves nothing behind in /tmp)."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, True)
    return path


_handed_out = set()
# Ports handed out to any test process that is still alive: one file a port, holding its owner's
# PID. ctest runs two test files at once, and a port one of them has chosen but not yet bound (a
# Postfix takes a second or two to start) was seen bound by the other's mailark before it
# (test_postfix.py's primary answered as mailark under ASan).
_PORT_DIR = os.path.join(tempfile.gettempdir(), "mailark-test-ports")


def _claim_port(port):
    """Claims `port` for this process's lifetime; False when a live process holds it. Where the
    folder cannot be written (another user's), every port is taken as free, as before."""
    try:
        if not os.path.isdir(_PORT_DIR):
            os.makedirs(_PORT_DIR, exist_ok=True)
            os.chmod(_PORT_DIR, 0o1777)  # shared by every user's test runs, as /tmp is
    except OSError:
        return True
    path = os.path.join(_PORT_DIR, str(port))
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except PermissionError:
            return True
        except FileExistsError:
            try:
                with open(path) as f:
                    owner = int(f.read().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            alive = owner > 0
            if alive:
                try:
                    os.kill(owner, 0)
                except ProcessLookupError:
                    alive = False
                except PermissionError:
                    pass
            if alive and owner != os.getpid():
                return False
            try:
                os.unlink(path)  # left by a process that is gone
            except FileNotFoundError:
                pass
            except PermissionError:
                return False  # another user's, gone or not: not this one
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        atexit.register(_release_port, path)
        return True
    return False


def _release_port(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def free_port():
    """A port for a test's listener, below the kernel's ephemeral range (32768 and up on Debian):
    a port from bind(0) could be taken by some client socket's ephemeral end (imaptest alone opens
    thousands) before the server under test binds it. Random in 20000-32767, checked bindable, never
    handed out twice by one process, nor to two test processes alive at once (_claim_port)."""
    import random
    for _ in range(1000):
        port = random.randint(20000, 32767)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if not _claim_port(port):
            continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port in 20000-32767")


def insecure_tls():
    """A client context that accepts the server's self-signed certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def read_replies(sock, count, timeout=10):
    """Reads until `count` final reply lines (code + space) arrived, or the connection closed.
    Returns (codes, text)."""
    sock.settimeout(timeout)
    data = b""
    codes = []
    text = b""
    while len(codes) < count:
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, ssl.SSLError, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
        text += chunk
        lines = data.split(b"\r\n")
        data = lines.pop()
        for line in lines:
            if len(line) >= 4 and line[3:4] == b" ":
                codes.append(line[:3].decode())
    return codes, text.decode(errors="replace")


class Server:
    """`mailark serve` with a configuration file; `config` is the TOML text."""

    def __init__(self, config, data=None, env=None, wait_port=None, open_files=None):
        self.tmp = scratch("mailark-e2e-")
        self.data = data or os.path.join(self.tmp, "data")
        self.config = os.path.join(self.tmp, "mailark.toml")
        with open(self.config, "w") as f:
            f.write(config)
        self.log_path = os.path.join(self.tmp, "serve.log")
        self.env = dict(os.environ, **(env or {}))
        self.proc = None
        self.wait_port = wait_port
        self.open_files = open_files  # RLIMIT_NOFILE, soft and hard, for the server alone

    def start(self):
        # A server started again appends to the same log: it is up once it says so again.
        started_before = self.server_log().count("listening:")
        self.log = open(self.log_path, "ab")
        limit = None
        if self.open_files:
            def limit():
                resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))
        self.proc = subprocess.Popen([BIN, "--data", self.data, "serve", "--config", self.config],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=self.env, preexec_fn=limit)
        deadline = time.time() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("mailark serve exited: " + self.server_log())
            if self.server_log().count("listening:") > started_before and (
                    self.wait_port is None or _connectable(self.wait_port)):
                return self
            if time.time() > deadline:
                raise RuntimeError("mailark serve did not start: " + self.server_log())
            time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()
        return self.proc.returncode if self.proc else None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def server_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def add_user(self, name, password, role="user", display_name=None):
        """`mailark user add` (before or beside the running server)."""
        args = ["user", "add", name, "--password-stdin", "--role", role]
        if display_name:
            args += ["--name", display_name]
        p = subprocess.run([BIN, "--data", self.data, *args], input=password.encode() + b"\n", capture_output=True,
                           timeout=60, env=self.env)
        assert p.returncode == 0, p.stderr

    def run(self, *args, timeout=120):
        return subprocess.run([BIN, "--data", self.data, *args], capture_output=True, timeout=timeout,
                              env=self.env)

    def cli(self, *args):
        p = self.run(*args, "--json")
        if p.returncode != 0:
            raise AssertionError(f"mailark {' '.join(args)} exited {p.returncode}: {p.stderr.decode()}")
        return json.loads(p.stdout)

    def search(self, query):
        return self.cli("search", query)

    def wait_for(self, query, expected=1, timeout=20):
        """The server commits its index every few hundred ms: poll (bounded) until a search sees
        `expected` messages; returns the last result."""
        deadline = time.time() + timeout
        while True:
            res = self.search(query)
            if res["total"] >= expected or time.time() > deadline:
                return res
            time.sleep(0.1)


def _connectable(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def smtp_connect(port, tls_mode):
    """A connected socket past the greeting: tls_mode is "none", "starttls" or "implicit"."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if tls_mode == "implicit":
        sock = insecure_tls().wrap_socket(sock)
    codes, _ = read_replies(sock, 1)
    assert codes == ["220"], codes
    if tls_mode == "starttls":
        sock.sendall(b"EHLO client.test.example\r\n")
        read_replies(sock, 1)
        sock.sendall(b"STARTTLS\r\n")
        codes, _ = read_replies(sock, 1)
        assert codes == ["220"], codes
        sock = insecure_tls().wrap_socket(sock)
    return sock
