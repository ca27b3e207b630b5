"""What attachment text costs an import: N messages, each with a one-page PDF or a Word file whose
words are lines of Enron mail (../shared/corpus), imported once with the mailark-extract worker beside
the binaries and once without it (the binaries copied to a folder of their own: no worker, no text),
in one run (docs/BENCHMARKS.md "Attachment text").

Usage: python3 bench/extract/run.py [--build build-dev] [--messages 1000]
"""
import argparse
import email.message
import glob
import mailbox
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "e2e"))
from test_extract import docx, make_pdf  # noqa: E402  (the documents the tests make)

CORPUS = os.environ.get("MAILARK_CORPUS", os.path.join(HERE, "..", "..", "..", "shared", "corpus"))
ap = argparse.ArgumentParser()
ap.add_argument("--build", default=os.path.join(HERE, "..", "..", "build-dev"))
ap.add_argument("--messages", type=int, default=1000)
args = ap.parse_args()

lines = []
for path in sorted(glob.glob(os.path.join(CORPUS, "enron", "maildir", "beck-s", "*", "*")))[:400]:
    with open(path, "rb") as f:
        body = f.read().split(b"\n\n", 1)[-1].decode(errors="replace")
    lines += [l.strip() for l in body.splitlines() if 20 < len(l.strip()) < 80 and "(" not in l and ")" not in l and "\\" not in l]
if len(lines) < 50:
    raise SystemExit("no Enron mail under " + CORPUS)

with tempfile.TemporaryDirectory(prefix="mailark-extract-bench-") as tmp:
    box_path = os.path.join(tmp, "in.mbox")
    box = mailbox.mbox(box_path)
    for i in range(args.messages):
        text = [lines[(i * 7 + k) % len(lines)] for k in range(12)]
        m = email.message.EmailMessage()
        m["From"] = "a@example.com"
        m["To"] = "b@example.com"
        m["Subject"] = f"document {i}"
        m["Message-ID"] = f"<bench-{i}@example.com>"
        m.set_content("See the attached file.")
        data, name = (make_pdf(text), f"d{i}.pdf") if i % 2 == 0 else (docx(text), f"d{i}.docx")
        m.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
        box.add(m)
    box.close()
    bare = os.path.join(tmp, "bare")
    os.mkdir(bare)
    for b in ("mailark", "mailark-server"):
        shutil.copy2(os.path.join(args.build, b), bare)
    results = {}
    for label, binary in (("with text", os.path.join(args.build, "mailark")), ("without", os.path.join(bare, "mailark"))):
        data = os.path.join(tmp, label.replace(" ", "-"))
        t = time.monotonic()
        subprocess.run([binary, "--data", data, "import", "--no-scan", box_path], check=True, capture_output=True)
        results[label] = time.monotonic() - t
        hits = subprocess.run([binary, "--data", data, "search", f"extracted:{lines[0].split()[0].lower()}", "--json"],
                              capture_output=True).stdout.decode()
        print(f"{label}: {results[label]:.2f} s, {args.messages / results[label]:.0f} msg/s; search extracted: {hits[:60]}")
    extra = results["with text"] - results["without"]
    print(f"ratio {results['with text'] / results['without']:.2f}x; {1000 * extra / args.messages:.2f} ms a document on top")
