"""A private Postfix instance for tests and benchmarks: its own configuration, queue and data folders
under a scratch folder, the master process in the foreground, logging to a file. Needs root and the
Debian package postfix."""
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time

MASTER = "/usr/lib/postfix/sbin/master"


def available():
    return os.path.exists(MASTER) and os.geteuid() == 0


def wait_listening(port, proc, what, read_log, seconds=30):
    """Until something accepts on 127.0.0.1:port; raises with the end of the log when `proc` exits or
    time runs out. (Shared by the private Postfix and Dovecot.)"""
    deadline = time.time() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{what} did not start: " + read_log()[-3000:])
            time.sleep(0.1)


def wait_closed(port, seconds=10):
    """Until nothing accepts on 127.0.0.1:port any more (children leave after their master)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            time.sleep(0.1)
        except OSError:
            return


class Postfix:
    def __init__(self, folder, port, main_cf):
        """main_cf: extra main.cf lines (relay rules, transports, mailboxes)."""
        self.folder, self.port = folder, port
        self.conf, self.queue, self.data = (os.path.join(folder, d) for d in ("conf", "queue", "data"))
        for d in (self.conf, self.queue, self.data):
            os.makedirs(d, exist_ok=True)
        shutil.chown(self.data, "postfix")
        with open("/etc/postfix/master.cf") as f:
            master = f.read().replace("smtp      inet  n       -       y       -       -       smtpd",
                                      f"127.0.0.1:{port} inet n - n - - smtpd")
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(master)
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write(f"""compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {self.data}
myhostname = primary.test.example
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = /dev/stdout
smtpd_tls_security_level = none
smtp_tls_security_level = none
{main_cf}
""")
        subprocess.run(["sh", "/usr/lib/postfix/sbin/post-install", f"config_directory={self.conf}",
                        "command_directory=/usr/sbin", "daemon_directory=/usr/lib/postfix/sbin",
                        "meta_directory=/etc/postfix", f"queue_directory={self.queue}",
                        f"data_directory={self.data}", "create-missing"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.proc = None
        self.log_path = os.path.join(folder, "postfix.log")

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([MASTER, "-c", self.conf, "-d"], stdout=self.log, stderr=subprocess.STDOUT)
        wait_listening(self.port, self.proc, "Postfix", self.read_log)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        if self.proc:
            self.log.close()
        self.proc = None
        wait_closed(self.port)

    def flush(self):
        """Asks this instance to try its deferred mail now (postqueue -f), as an administrator would."""
        subprocess.run(["postqueue", "-c", self.conf, "-f"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")


def nobody_ids():
    pw = pwd.getpwnam("nobody")
    return pw.pw_uid, pw.pw_gid
