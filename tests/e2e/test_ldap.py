"""Logins against a company directory: a private slapd (OpenLDAP, Debian's slapd package) started by
the test on loopback, with two people in it. mailark's directory has them without local passwords
(`mailark user add --no-password`); IMAP and submission logins are checked with a search-then-bind
against slapd ([ldap] in the configuration)."""
import imaplib
import os
import shutil
import smtplib
import subprocess
import tempfile
import time
import unittest

from harness import BIN, Server, free_port, insecure_tls

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SLAPADD = shutil.which("slapadd") or "/usr/sbin/slapadd"


class LdapTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.path.exists(SLAPD) or not os.path.exists(SLAPADD):
            raise unittest.SkipTest("slapd is not installed (Debian's slapd package; scripts/setup.sh installs it)")
        cls.dir = tempfile.mkdtemp(prefix="mailark-slapd-")
        db = os.path.join(cls.dir, "db")
        os.makedirs(db)
        cls.ldap_port = free_port()
        conf = os.path.join(cls.dir, "slapd.conf")
        with open(conf, "w") as f:
            f.write(f"""include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {cls.dir}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
suffix "dc=example,dc=com"
rootdn "cn=admin,dc=example,dc=com"
rootpw admin-secret
directory {db}
access to attrs=userPassword by anonymous auth by * none
access to * by * read
""")
        ldif = os.path.join(cls.dir, "people.ldif")
        with open(ldif, "w") as f:
            f.write("""dn: dc=example,dc=com
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,dc=example,dc=com
objectClass: organizationalUnit
ou: people

dn: uid=erin,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: erin
cn: Erin
sn: Example
mail: erin@example.com
userPassword: erin-directory-pw

dn: uid=frank,ou=people,dc=example,dc=com
objectClass: inetOrgPerson
uid: frank
cn: Frank
sn: Example
mail: frank@example.com
userPassword: frank-directory-pw
""")
        subprocess.run([SLAPADD, "-f", conf, "-l", ldif], check=True, capture_output=True, timeout=60)
        cls.slapd = subprocess.Popen([SLAPD, "-f", conf, "-h", f"ldap://127.0.0.1:{cls.ldap_port}/", "-d", "0"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline:
            if subprocess.run(["ldapsearch", "-x", "-H", f"ldap://127.0.0.1:{cls.ldap_port}", "-b",
                               "dc=example,dc=com", "(uid=erin)"], capture_output=True).returncode == 0:
                break
            time.sleep(0.2)
        cls.imaps, cls.subs = free_port(), free_port()
        cls.server = Server(f"""
[inbound]
domains = ["example.com"]
[ldap]
url = "ldap://127.0.0.1:{cls.ldap_port}"
base_dn = "ou=people,dc=example,dc=com"
filter = "(mail=%u)"
timeout = 2
[[listener]]
role = "inbound"
port = {free_port()}
[[listener]]
role = "imap"
port = {cls.imaps}
tls = "implicit"
[[listener]]
role = "submission"
port = {cls.subs}
tls = "implicit"
""", wait_port=cls.imaps)
        p = subprocess.run([BIN, "--data", cls.server.data, "user", "add", "erin@example.com", "--no-password"],
                           capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.cleanup()
        cls.slapd.terminate()
        cls.slapd.wait(timeout=30)
        shutil.rmtree(cls.dir, ignore_errors=True)

    def imap_login(self, user, pw):
        m = imaplib.IMAP4_SSL("127.0.0.1", self.imaps, ssl_context=insecure_tls(), timeout=30)
        try:
            # AUTHENTICATE PLAIN: any byte in the name reaches the server as sent.
            m.authenticate("PLAIN", lambda _: b"\0" + user.encode() + b"\0" + pw.encode())
            m.logout()
            return "OK"
        except imaplib.IMAP4.error as e:
            m.shutdown()
            return str(e)

    def test_directory_password_logs_in(self):
        self.assertEqual(self.imap_login("erin@example.com", "erin-directory-pw"), "OK")
        s = smtplib.SMTP_SSL("127.0.0.1", self.subs, context=insecure_tls(), timeout=30)
        s.login("erin@example.com", "erin-directory-pw")
        s.quit()

    def test_wrong_password_and_strangers_are_refused(self):
        self.assertIn("AUTHENTICATIONFAILED", self.imap_login("erin@example.com", "wrong"))
        self.assertIn("AUTHENTICATIONFAILED", self.imap_login("erin@example.com", ""))
        # frank is in the directory but not a mailark user: no mailbox, no login.
        self.assertIn("AUTHENTICATIONFAILED", self.imap_login("frank@example.com", "frank-directory-pw"))
        # A name that would widen the filter matches nothing (only users of mailark's directory are
        # looked up, by their stored name; Ldap.FilterValuesAreEscaped checks the escaping itself).
        self.assertIn("AUTHENTICATIONFAILED", self.imap_login("*", "erin-directory-pw"))
        self.assertIn("AUTHENTICATIONFAILED", self.imap_login("erin@example.com)(mail=*", "erin-directory-pw"))

    def test_directory_down_is_a_temporary_failure(self):
        self.slapd.send_signal(19)  # SIGSTOP: the directory stops answering
        try:
            answer = self.imap_login("erin@example.com", "erin-directory-pw")
        finally:
            self.slapd.send_signal(18)  # SIGCONT
        self.assertIn("UNAVAILABLE", answer)
        self.assertIn("directory", self.server.server_log())


if __name__ == "__main__":
    unittest.main()
