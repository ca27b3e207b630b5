#!/usr/bin/env python3
"""bench/web: the web portal's search API and first inbox render, at two archive sizes, in one run.

For each size (default 21,903 and 306,642 messages: the distinct Enron messages of ../shared/corpus,
and that set copied 14 times with new Message-IDs, one mbox per copy), the messages are imported for
one user (`mailark import --owner`), `mailark serve` runs with the web listener, and:

- the search API (GET /api/v1/search, keep-alive, logged in): each query of QUERIES --rounds times
  after one warm-up; the latency of each answer as the client sees it (median and p95 per query, p95
  over all); the answer's total is printed so the work is visible;
- the folder API (GET /api/v1/folders/INBOX/messages, the first page of 50): median and p95;
- the first inbox render in Debian's Chromium (headless, Selenium): a fresh page load of the portal
  with the session cookie, until the inbox list is on screen (the UI's `mailark:folder-rendered`
  User Timing mark, measured from navigation start): median and p95 of --renders loads.

No peer is named for these figures; docs/BENCHMARKS.md sets them beside the IMAP and CLI search
figures measured on the same messages.

  python3 bench/web/bench.py [--mailark build/mailark] [--sizes 21903,306642] [--rounds 20] [--renders 10]
"""
import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
sys.path.insert(0, os.path.join(ROOT, "bench", "smtp"))
from common import enron_files, free_port, link_originals, wait_port, write_copies  # noqa: E402

USER, PASSWORD = "bench@example.com", "bench-pw-123"
QUERIES = ["enron", "pipeline", "california power", "\"natural gas\"", "\"power crisis\"", "from:pete.davis@enron.com",
           "to:jeff.skilling@enron.com", "subject:meeting", "date:2001-05..2001-06 gas", "power OR electricity",
           "gas NOT power"]


class Api:
    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.cookie = None

    def request(self, method, path, body=None):
        headers = {"Cookie": self.cookie} if self.cookie else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=data, headers=headers)
        res = self.conn.getresponse()
        payload = res.read()
        if res.getheader("Set-Cookie"):
            self.cookie = res.getheader("Set-Cookie").split(";")[0]
        return res.status, json.loads(payload) if payload else None


def p95(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]


def browser_renders(port, cookie, renders):
    sys.path.append("/usr/lib/python3/dist-packages")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    profile = tempfile.mkdtemp(prefix="mailark-bench-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,900"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        base = f"http://127.0.0.1:{port}"
        d.get(base + "/health")
        name, value = cookie.split("=", 1)
        d.add_cookie({"name": name, "value": value, "path": "/"})
        times = []
        for i in range(renders + 1):
            d.get(f"{base}/?load={i}#/")
            deadline = time.time() + 60
            t = None
            while time.time() < deadline:
                t = d.execute_script(
                    "const m = performance.getEntriesByName('mailark:folder-rendered'); return m.length ? m[0].startTime : null")
                if t is not None:
                    break
                time.sleep(0.01)
            if t is None:
                raise RuntimeError("the inbox did not render")
            if i:  # the first load fills the browser's cache of app.js and app.css
                times.append(t)
        return times
    finally:
        d.quit()
        shutil.rmtree(profile, ignore_errors=True)


def bench_size(args, files, size, work):
    data = os.path.join(work, f"data-{size}")
    run = lambda *a, **kw: subprocess.run([args.mailark, "--data", data, *a], check=True, capture_output=True, **kw)
    run("user", "add", USER, "--password-stdin", input=PASSWORD.encode() + b"\n")
    sources = [link_originals(files, work)]
    copies = max(1, round(size / len(files)))
    if copies > 1:
        gen = os.path.join(work, "copies")
        if not os.path.isdir(gen):
            os.makedirs(gen)
            t = time.perf_counter()
            write_copies(files, copies, gen)
            print(f"  wrote {copies - 1} mbox copies in {time.perf_counter() - t:.0f} s")
        sources += sorted(os.path.join(gen, n) for n in os.listdir(gen))
    t = time.perf_counter()
    run("import", "--no-scan", "--owner", USER, *sources)
    stats = json.loads(run("stats", "--json").stdout)
    print(f"  imported {stats['messages']} messages in {time.perf_counter() - t:.0f} s")
    port = free_port()
    cfg = os.path.join(work, f"mailark-{size}.toml")
    with open(cfg, "w") as f:
        f.write(f'[[listener]]\nrole = "inbound"\nport = {free_port()}\n'
                f'[web]\nlisten = "127.0.0.1:{port}"\nrequests_per_second = 100000\n')
    log = open(os.path.join(work, f"mailark-{size}.log"), "wb")
    proc = subprocess.Popen([args.mailark, "--data", data, "serve", "--config", cfg], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc)
        api = Api(port)
        status, _ = api.request("POST", "/api/v1/login", {"user": USER, "password": PASSWORD})
        assert status == 200
        # The mailbox store follows the archive in the background: wait until the INBOX has everything.
        inbox = None
        deadline = time.time() + 1800
        while time.time() < deadline:
            folders = api.request("GET", "/api/v1/folders")[1]["folders"]
            inbox = next(f for f in folders if f["name"] == "INBOX")
            placed = sum(f["messages"] for f in folders)
            if placed >= stats["messages"] * 0.99:
                break
            time.sleep(1)
        result = {"messages": stats["messages"], "placed": placed, "queries": {}}
        all_times = []
        for q in QUERIES:
            path = "/api/v1/search?limit=50&q=" + urllib.parse.quote(q)
            status, body = api.request("GET", path)  # warm-up
            assert status == 200, body
            ts = []
            for _ in range(args.rounds):
                t = time.perf_counter()
                status, body = api.request("GET", path)
                ts.append(time.perf_counter() - t)
            all_times += ts
            result["queries"][q] = {"total": body["total"], "median_ms": statistics.median(ts) * 1000, "p95_ms": p95(ts) * 1000}
        result["search_p95_ms"] = p95(all_times) * 1000
        ts = []
        path = f"/api/v1/folders/{inbox['id']}/messages?limit=50"
        api.request("GET", path)
        for _ in range(args.rounds):
            t = time.perf_counter()
            api.request("GET", path)
            ts.append(time.perf_counter() - t)
        result["inbox_page_median_ms"] = statistics.median(ts) * 1000
        result["inbox_page_p95_ms"] = p95(ts) * 1000
        with open(f"/proc/{proc.pid}/status") as f:
            result["server_rss_mb"] = next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
        if args.renders:
            r = browser_renders(port, api.cookie, args.renders)
            result["first_render_median_ms"] = statistics.median(r)
            result["first_render_p95_ms"] = p95(r)
        return result
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mailark", default=os.path.join(ROOT, "build", "mailark"))
    ap.add_argument("--corpus", default=os.path.join(ROOT, "..", "shared", "corpus"))
    ap.add_argument("--sizes", default="21903,306642")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--renders", type=int, default=10)
    ap.add_argument("--keep", action="store_true", help="keep the data folders")
    args = ap.parse_args()
    files = enron_files(args.corpus)
    print(f"{len(files)} distinct messages from {args.corpus}/enron/maildir")
    work = tempfile.mkdtemp(prefix="mailark-bench-web-")
    results = {}
    try:
        for size in [int(s) for s in args.sizes.split(",")]:
            print(f"== {size} messages")
            r = bench_size(args, files, size, work)
            results[size] = r
            print(f"  {r['messages']} archived, {r['placed']} in the user's folders; server RSS {r['server_rss_mb']:.0f} MB")
            for q, v in r["queries"].items():
                print(f"  search {q!r:34} total {v['total']:>7}  median {v['median_ms']:7.1f} ms  p95 {v['p95_ms']:7.1f} ms")
            print(f"  search API p95 over all queries: {r['search_p95_ms']:.1f} ms")
            print(f"  inbox page (50): median {r['inbox_page_median_ms']:.1f} ms, p95 {r['inbox_page_p95_ms']:.1f} ms")
            if "first_render_median_ms" in r:
                print(f"  first inbox render in Chromium: median {r['first_render_median_ms']:.0f} ms, "
                      f"p95 {r['first_render_p95_ms']:.0f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
