"""The web portal in a real browser: Debian's headless Chromium driven by Selenium (Debian's
python3-selenium and chromium-driver), against a real `mailark serve`. Screenshots are kept as test
artefacts in $MAILARK_ARTIFACTS/web-ui (default build/test-artifacts/web-ui).

- a user logs in, reads the inbox, opens a message, downloads nothing by accident, writes a message
  with an attachment, and the recipient reads it;
- search with filters;
- the admin dashboard: the monitor chart, the queue, and the panic button (start and stop);
- a phone-sized window: no sideways scrolling;
- each view is drawn once (the login form is not replaced under the user's typing);
- a hostile HTML message (scripts, event handlers, javascript: links, CSS tricks, remote images,
  forms, frames, SVG and MathML mutation tricks) runs nothing and loads nothing in the browser:
  asserted in the browser (the frame's DOM, the top page's state) and on the wire (a beacon server
  the message points at gets no request until the user asks for images, and then only images)."""
import http.server
import os
import shutil
import smtplib
import tempfile
import threading
import time
import unittest

from harness import Server, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARTIFACTS = os.path.join(os.environ.get("MAILARK_ARTIFACTS", os.path.join(ROOT, "build", "test-artifacts")), "web-ui")

try:
    import sys
    try:
        import selenium  # noqa: F401
    except ImportError:
        # Debian's python3-selenium, when python3 is another build of the same Python (pyenv).
        sys.path.append("/usr/lib/python3/dist-packages")
    from selenium import webdriver
    from selenium.common.exceptions import (NoAlertPresentException, NoSuchElementException,
                                            StaleElementReferenceException)
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
    HAVE_SELENIUM = True
except ImportError:  # pragma: no cover
    HAVE_SELENIUM = False

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
MISSING = None
if not HAVE_SELENIUM:
    MISSING = "python3-selenium is not installed (scripts/setup.sh installs it)"
elif not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    MISSING = "chromium and chromium-driver are not installed (scripts/setup.sh installs them)"


class Beacon:
    """An HTTP server that records every request: what the hostile message tries to load."""

    def __init__(self):
        self.port = free_port()
        self.hits = []
        beacon = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                beacon.hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png" if self.path.endswith(".png") else "text/plain")
                self.end_headers()
                if self.path.endswith(".png"):
                    # A 1x1 PNG.
                    self.wfile.write(bytes.fromhex(
                        "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
                        "0000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"))

            do_POST = do_GET

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def hostile_html(b):
    u = f"http://127.0.0.1:{b}"
    return f"""<html><head>
<title>hostile</title>
<style>body {{ background: url({u}/css-bg.png) }} @import url({u}/css-import);</style>
<script>top.document.title = 'PWNED'; fetch('{u}/script');</script>
<meta http-equiv="refresh" content="0;url={u}/refresh">
<base href="{u}/">
<link rel="stylesheet" href="{u}/link-css">
</head><body onload="fetch('{u}/onload')">
<p id="greeting">Hello hostile world</p>
<img id="remote" src="{u}/remote-image.png" onerror="fetch('{u}/onerror')">
<img src="x" onerror="fetch('{u}/onerror2')">
<a id="jslink" href="javascript:fetch('{u}/jslink')">click me</a>
<a id="tablink" href="jav&#x09;ascript:fetch('{u}/tablink')">tab trick</a>
<a id="good" href="https://example.org/page">a fine link</a>
<a id="relative" href="/api/v1/admin/users">relative</a>
<div id="overlay" style="position:fixed;top:0;left:0;width:100%;height:100%;z-index:99;background:url({u}/div-bg.png);color:red">overlay</div>
<p style="color: expression(alert(1)); font-weight: bold">styled</p>
<svg><script>fetch('{u}/svg')</script><image href="{u}/svg-image.png"/></svg>
<iframe src="{u}/iframe"></iframe>
<form action="{u}/form"><input name="x"><button id="formbutton">go</button></form>
<object data="{u}/object"></object><embed src="{u}/embed">
<video src="{u}/video" autoplay></video><audio src="{u}/audio" autoplay></audio>
<math><mtext><table><mglyph><style><img src=x onerror="fetch('{u}/mxss')"></style></mglyph></table></mtext></math>
<noscript><p title="</noscript><img src=x onerror=fetch('{u}/noscript')>"></noscript>
<table background="{u}/table-bg.png"><tr><td>cell</td></tr></table>
<img srcset="{u}/srcset.png 1x" alt="srcset">
</body></html>"""


def mail(subject, to, body, html=None, frm="sender@internet.example"):
    head = (f"From: Sender <{frm}>\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{time.time_ns()}@internet.example>\r\n"
            "Date: Sun, 29 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n")
    if html is None:
        return (head + "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body).encode()
    html = html.replace("\r\n", "\n").replace("\n", "\r\n")
    return (head + "Content-Type: multipart/alternative; boundary=ALT\r\n\r\n--ALT\r\nContent-Type: text/plain\r\n\r\n"
            + body + "\r\n--ALT\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + html + "\r\n--ALT--\r\n").encode()


@unittest.skipIf(MISSING, MISSING or "")
class WebUiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        os.makedirs(ARTIFACTS, exist_ok=True)
        cls.beacon = Beacon()
        cls.mx, cls.web = free_port(), free_port()
        cls.server = Server(f"""
[server]
hostname = "mx.test.example"
[inbound]
domains = ["example.com"]
verify_recipients = "none"
[delivery]
smarthost = ["127.0.0.1:{free_port()}"]
primary = ["127.0.0.1:{free_port()}"]
retry_schedule = [60]
[continuity]
window = 5
[web]
listen = "127.0.0.1:{cls.web}"
requests_per_second = 1000
[[listener]]
name = "mx"
role = "inbound"
port = {cls.mx}
tls = "none"
""", wait_port=cls.web)
        cls.server.add_user("alice@example.com", "alice-pw-123", "admin", "Alice")
        cls.server.add_user("bob@example.com", "bob-pw-123", "user", "Bob")
        cls.server.start()
        with smtplib.SMTP("127.0.0.1", cls.mx, timeout=30) as s:
            for i in range(12):
                s.sendmail("sender@internet.example", ["alice@example.com"],
                           mail(f"Weekly report {i}", "alice@example.com", f"report number {i}\r\n"))
            s.sendmail("sender@internet.example", ["alice@example.com"],
                       mail("Hostile newsletter", "alice@example.com", "plain part", hostile_html(cls.beacon.port)))
            s.sendmail("boss@internet.example", ["alice@example.com"],
                       mail("Budget meeting", "alice@example.com", "the budget is due friday\r\n", frm="boss@internet.example"))
        cls.server.wait_for("budget")
        cls.profile = tempfile.mkdtemp(prefix="mailark-chromium-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", f"--user-data-dir={cls.profile}", "--window-size=1280,900"):
            opts.add_argument(a)
        cls.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        cls.driver.set_page_load_timeout(30)
        cls.base = f"http://127.0.0.1:{cls.web}"

    @classmethod
    def tearDownClass(cls):
        cls.driver.quit()
        cls.server.cleanup()
        cls.beacon.close()
        shutil.rmtree(cls.profile, ignore_errors=True)

    # ---- helpers ----

    def wait(self, condition, timeout=15):
        # The page re-renders by replacing its nodes: an element can go stale between find and read.
        return WebDriverWait(self.driver, timeout, ignored_exceptions=(StaleElementReferenceException,
                                                                       NoSuchElementException)).until(condition)

    def css(self, selector, timeout=15):
        return self.wait(EC.presence_of_element_located((By.CSS_SELECTOR, selector)), timeout)

    def shot(self, name):
        self.driver.save_screenshot(os.path.join(ARTIFACTS, name + ".png"))

    def login(self, user, password):
        d = self.driver
        d.get(self.base + "/#/logout")
        d.delete_all_cookies()
        d.get(self.base + "/")
        self.css("#login")
        d.find_element(By.ID, "user").send_keys(user)
        d.find_element(By.ID, "password").send_keys(password)
        d.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
        self.css("#messages")

    def open_message(self, subject):
        self.driver.get(self.base + "/#/")
        self.css("#messages")
        link = self.wait(EC.element_to_be_clickable((By.XPATH, f"//a[contains(@class,'row')][.//span[contains(text(),'{subject}')]]")))
        link.click()
        self.css("#message")

    def no_alert(self):
        try:
            self.driver.switch_to.alert
            return False
        except NoAlertPresentException:
            return True

    # ---- tests ----

    def test_login_read_and_send(self):
        d = self.driver
        d.get(self.base + "/health")
        d.delete_all_cookies()
        d.get(self.base + "/")
        self.css("#login")
        self.shot("01-login")
        d.find_element(By.ID, "user").send_keys("alice@example.com")
        d.find_element(By.ID, "password").send_keys("wrong password")
        d.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
        self.wait(lambda drv: "wrong" in drv.find_element(By.CSS_SELECTOR, "#login .error").text)
        self.login("alice@example.com", "alice-pw-123")
        rows = d.find_elements(By.CSS_SELECTOR, "#messages li")
        self.assertEqual(len(rows), 14)
        self.assertIn("Budget meeting", rows[0].text)
        self.shot("02-inbox")
        self.open_message("Budget meeting")
        self.assertEqual(d.find_element(By.ID, "subject").text, "Budget meeting")
        self.assertIn("the budget is due friday", d.find_element(By.ID, "body-text").text)
        d.find_element(By.CSS_SELECTOR, "#all-headers summary").click()
        self.assertIn("Received", d.find_element(By.ID, "all-headers").text)
        self.shot("03-message")
        # Write to bob with an attachment.
        d.get(self.base + "/#/compose")
        self.css("#compose")
        with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
            f.write(b"minutes of the budget meeting\n")
            path = f.name
        d.find_element(By.ID, "to").send_keys("Bob <bob@example.com>")
        d.find_element(By.ID, "compose-subject").send_keys("Minutes")
        d.find_element(By.ID, "text").send_keys("Bob, the minutes are attached.")
        d.find_element(By.ID, "files").send_keys(path)
        self.shot("04-compose")
        d.find_element(By.CSS_SELECTOR, "#compose button[type=submit]").click()
        self.wait(lambda drv: "Sent to bob@example.com" in drv.find_element(By.ID, "compose-status").text)
        os.unlink(path)
        # Bob reads it, attachment listed.
        self.login("bob@example.com", "bob-pw-123")
        deadline = time.time() + 20
        while "Minutes" not in d.find_element(By.ID, "messages").text and time.time() < deadline:
            time.sleep(0.3)
            d.refresh()
            self.css("#messages")
        self.open_message("Minutes")
        self.assertIn("the minutes are attached", d.find_element(By.ID, "body-text").text)
        self.assertIn(".txt", d.find_element(By.ID, "attachments").text)
        self.assertNotIn("Budget meeting", d.page_source)  # bob sees nothing of alice's
        self.shot("05-bob-reads")

    def test_search_with_filters(self):
        d = self.driver
        self.login("alice@example.com", "alice-pw-123")
        box = d.find_element(By.CSS_SELECTOR, "#search input")
        box.send_keys("report")
        d.find_element(By.CSS_SELECTOR, "#search button").click()
        self.wait(lambda drv: "12 messages" in drv.find_element(By.ID, "result-count").text)
        form = d.find_element(By.ID, "filters")
        form.find_element(By.NAME, "from").send_keys("boss@internet.example")
        q = form.find_element(By.NAME, "q")
        q.clear()
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        self.wait(lambda drv: drv.find_element(By.ID, "result-count").text == "1 message")
        self.assertIn("Budget meeting", d.find_element(By.ID, "messages").text)
        self.shot("06-search")

    def test_admin_dashboard_and_panic_button(self):
        d = self.driver
        self.login("alice@example.com", "alice-pw-123")
        d.get(self.base + "/#/admin")
        self.css("#continuity")
        self.assertEqual(d.find_element(By.ID, "continuity-state").text, "normal")
        # The monitor's windows (5 s here): deliveries to the primary fail (nothing listens there),
        # so the chart fills with failed windows.
        deadline = time.time() + 30
        while len(d.find_elements(By.CSS_SELECTOR, "#monitor-chart rect")) < 4 and time.time() < deadline:
            time.sleep(1)
            d.refresh()
            self.css("#continuity")
        self.assertGreaterEqual(len(d.find_elements(By.CSS_SELECTOR, "#monitor-chart rect")), 4)
        self.assertIn("monitor windows", d.find_element(By.ID, "chart-legend").text)
        self.assertIn("Archive", d.find_element(By.ID, "stats").text)
        self.shot("07-admin")
        d.find_element(By.ID, "panic-reason").send_keys("primary down (browser test)")
        d.find_element(By.ID, "panic").click()
        self.wait(EC.alert_is_present()).accept()  # "Start a continuity event?"
        self.wait(lambda drv: drv.find_element(By.ID, "continuity-state").text == "active")
        self.assertIn("primary down (browser test)", d.find_element(By.ID, "continuity").text)
        self.shot("08-continuity-active")
        status = self.server.cli("continuity", "status")
        self.assertEqual(status["state"], "active")
        d.find_element(By.ID, "stop-event").click()
        self.wait(lambda drv: drv.find_element(By.ID, "continuity-state").text != "active")
        self.wait(lambda drv: "primary down (browser test)" in drv.find_element(By.ID, "history").text)
        self.assertIn("web:alice@example.com", d.find_element(By.ID, "history").text)
        # A user has no admin page.
        self.login("bob@example.com", "bob-pw-123")
        self.assertEqual(d.find_elements(By.ID, "admin-link"), [])
        d.get(self.base + "/#/admin")
        self.wait(lambda drv: "admin role" in drv.find_element(By.CSS_SELECTOR, ".error").text)

    def test_each_view_is_drawn_once(self):
        # Before: the start-up session probe's 401 drew the login form, then moved to #/login, whose
        # hash change drew it again (a user's typing, or a test's element, went with the first form);
        # logging in drew the inbox twice. Every form and list added to the page is counted from the
        # document's start.
        d = self.driver
        counter = """window.__drawn = {login: 0, messages: 0};
            new MutationObserver(ms => { for (const m of ms) for (const n of m.addedNodes) {
              if (n.id === 'login') window.__drawn.login++;
              if (n.querySelector && n.querySelector('#messages')) window.__drawn.messages++;
            } }).observe(document, {childList: true, subtree: true});"""
        script = d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": counter})
        try:
            d.get(self.base + "/health")
            d.delete_all_cookies()
            d.get(self.base + "/")
            self.css("#login")
            # Both session probes (start-up's and #/login's) have answered, and what they drew is drawn.
            self.wait(lambda drv: drv.execute_script(
                "return performance.getEntriesByType('resource').filter(e => e.name.endsWith('/api/v1/session')).length") >= 2)
            time.sleep(0.5)
            self.assertEqual(d.execute_script("return window.__drawn"), {"login": 1, "messages": 0})
            d.find_element(By.ID, "user").send_keys("alice@example.com")
            d.find_element(By.ID, "password").send_keys("alice-pw-123")
            d.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
            self.css("#messages")
            self.wait(lambda drv: drv.execute_script(
                "return performance.getEntriesByType('resource').filter(e => e.name.includes('/messages?')).length") >= 1)
            time.sleep(0.5)
            self.assertEqual(d.execute_script("return window.__drawn"), {"login": 1, "messages": 1})
        finally:
            d.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]})

    def test_phone_screen(self):
        d = self.driver
        self.login("alice@example.com", "alice-pw-123")
        d.set_window_size(390, 844)
        try:
            d.get(self.base + "/#/")
            self.css("#messages")
            time.sleep(0.3)
            self.shot("09-phone-inbox")
            width = d.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
            self.assertLessEqual(width[0], width[1] + 1, "the inbox scrolls sideways on a phone")
            self.open_message("Budget meeting")
            self.shot("10-phone-message")
            width = d.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
            self.assertLessEqual(width[0], width[1] + 1, "the message scrolls sideways on a phone")
        finally:
            d.set_window_size(1280, 900)

    def test_hostile_html_runs_nothing(self):
        d = self.driver
        self.login("alice@example.com", "alice-pw-123")
        self.beacon.hits.clear()
        self.open_message("Hostile newsletter")
        frame = self.css("#body-frame")
        self.assertEqual(frame.get_attribute("sandbox"), "allow-popups allow-popups-to-escape-sandbox")
        time.sleep(2)  # time for anything that would run or load
        self.shot("11-hostile")
        self.assertTrue(self.no_alert())
        self.assertEqual(d.title, "mailark")
        self.assertEqual(self.beacon.hits, [], "the hostile message loaded something")
        self.assertIn("1 remote image", d.find_element(By.ID, "images-blocked").text)
        # Inside the frame: the text is there, nothing active is.
        d.switch_to.frame(frame)
        try:
            self.assertIn("Hello hostile world", d.find_element(By.ID, "greeting").text
                          if d.find_elements(By.ID, "greeting") else d.find_element(By.TAG_NAME, "body").text)
            for tag in ("script", "iframe", "frame", "object", "embed", "form", "input", "button", "svg", "math", "link",
                        "base", "video", "audio", "noscript", "title"):
                self.assertEqual(d.find_elements(By.TAG_NAME, tag), [], tag)
            for tag in ("style", "meta"):
                self.assertEqual(d.find_elements(By.CSS_SELECTOR, "body " + tag), [], tag)
            # The head is mailark's own: its charset and viewport, its one style sheet.
            self.assertEqual(len(d.find_elements(By.CSS_SELECTOR, "head meta")), 2)
            self.assertEqual(len(d.find_elements(By.CSS_SELECTOR, "head style")), 1)
            for el in d.find_elements(By.CSS_SELECTOR, "body *"):
                for attr in ("onload", "onerror", "onclick", "srcset", "background", "action", "formaction", "id"):
                    self.assertIsNone(el.get_dom_attribute(attr), f"<{el.tag_name} {attr}=...> survived")
            links = d.find_elements(By.TAG_NAME, "a")
            hrefs = [a.get_attribute("href") for a in links]
            self.assertIn("https://example.org/page", hrefs)
            for h in hrefs:
                self.assertTrue(h is None or h.startswith(("https:", "http:", "mailto:")), h)
            for a in links:
                if a.get_attribute("href"):
                    self.assertEqual(a.get_attribute("rel"), "noopener noreferrer")
            for el in d.find_elements(By.XPATH, "//*[contains(text(),'overlay')]"):
                self.assertNotEqual(el.value_of_css_property("position"), "fixed")
            styled = d.find_element(By.XPATH, "//p[contains(text(),'styled')]")
            self.assertEqual(styled.get_attribute("style"), "font-weight: bold;")
            # Clicking what was a javascript: link does nothing.
            d.find_element(By.XPATH, "//a[contains(text(),'click me')]").click()
        finally:
            d.switch_to.default_content()
        time.sleep(1)
        self.assertTrue(self.no_alert())
        self.assertEqual(self.beacon.hits, [])
        self.assertEqual(d.title, "mailark")
        # Asked for, the remote image (and only the image) loads: the wire was live all along.
        d.find_element(By.ID, "show-images").click()
        deadline = time.time() + 10
        while not self.beacon.hits and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(1)
        self.assertEqual(sorted(set(self.beacon.hits)), ["/remote-image.png"])
        self.shot("12-hostile-images-shown")


if __name__ == "__main__":
    unittest.main()
