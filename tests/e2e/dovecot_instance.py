"""A private Dovecot for tests: its own configuration, run folder and mail folders under a scratch
folder, IMAP on a loopback port, in the foreground, logging to a file. Users from a passwd-file (full
addresses as user names), one master user (for the Sent copies: SASL PLAIN with an authorisation
identity), and a SASL socket a private Postfix authenticates its clients with. Mail lives in Maildirs at <folder>/mail/<domain>/<user>/Maildir, which a private Postfix
delivers into as virtual mailboxes. Needs root and the Debian package dovecot-imapd."""
import os
import shutil
import signal
import subprocess

from postfix_instance import nobody_ids, wait_closed, wait_listening

DOVECOT = "/usr/sbin/dovecot"


def available():
    return os.path.exists(DOVECOT) and os.geteuid() == 0


class Dovecot:
    def __init__(self, folder, port, users, master=("sentcopy", "master-secret"), extra=""):
        """users: {address: password}; extra: more configuration (a benchmark's process limits)."""
        self.folder, self.port = folder, port
        self.mail = os.path.join(folder, "mail")
        self.run_dir = os.path.join(folder, "run")
        for d in (self.mail, self.run_dir):
            os.makedirs(d, exist_ok=True)
        uid, gid = nobody_ids()
        shutil.chown(self.mail, uid, gid)
        os.chmod(folder, 0o755)
        with open(os.path.join(folder, "users"), "w") as f:
            for addr, pw in users.items():
                f.write(f"{addr}:{{PLAIN}}{pw}\n")
        with open(os.path.join(folder, "masters"), "w") as f:
            f.write(f"{master[0]}:{{PLAIN}}{master[1]}\n")
        self.auth_socket = os.path.join(self.run_dir, "auth-postfix")  # SASL for a private Postfix
        self.conf = os.path.join(folder, "dovecot.conf")
        self.log_path = os.path.join(folder, "dovecot.log")
        with open(self.conf, "w") as f:
            f.write(f"""
protocols = imap
listen = 127.0.0.1
base_dir = {self.run_dir}
state_dir = {self.run_dir}/state
log_path = {self.log_path}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_master_user_separator = *
mail_location = maildir:{self.mail}/%d/%n/Maildir
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = 0
mail_privileged_group =
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service auth {{
  unix_listener auth-postfix {{
    mode = 0666
  }}
}}
service imap-login {{
  chroot =
}}
passdb {{
  driver = passwd-file
  args = {folder}/masters
  master = yes
  pass = yes
}}
passdb {{
  driver = passwd-file
  args = {folder}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={self.mail}/%d/%n
}}
namespace inbox {{
  inbox = yes
  mailbox Sent {{
    special_use = \\Sent
    auto = create
  }}
}}
{extra}
""")
        self.proc = None

    def start(self):
        self.err = open(self.log_path + ".stderr", "ab")
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", self.conf], stdout=subprocess.DEVNULL, stderr=self.err)
        wait_listening(self.port, self.proc, "Dovecot", self.read_log)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.err.close()
        self.proc = None
        wait_closed(self.port)

    def read_log(self):
        out = ""
        for p in (self.log_path, self.log_path + ".stderr"):
            try:
                with open(p, "rb") as f:
                    out += f.read().decode(errors="replace")
            except FileNotFoundError:
                pass
        return out

    def vmailbox_map(self, users):
        """Lines of a Postfix virtual_mailbox_maps table delivering into this Dovecot's Maildirs."""
        lines = []
        for addr in users:
            local, domain = addr.split("@")
            lines.append(f"{addr} {domain}/{local}/Maildir/")
        return "\n".join(lines) + "\n"
