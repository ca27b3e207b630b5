"""What a retention run costs on the Enron corpus (21,903 messages), and what it does to verify:
imports the 150 Enron mailboxes (one custodian each) in segments of --segment messages, holds one
case's search, sets a 30-day default, runs retention as if 40 days had passed (faketime), and times,
in one run: the import, `verify` before, the run itself (whole process), `verify` after, and the
data folder's size before and after (docs/BENCHMARKS.md "Retention").

Usage: python3 bench/retention/expire.py [--bin build-dev/mailark] [--segment 2000] [--hold QUERY]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scale"))
from run import du  # noqa: E402  (bench/scale's: blocks on disk, as du counts them)
CORPUS = os.environ.get("MAILARK_CORPUS", os.path.join(HERE, "..", "..", "..", "shared", "corpus"))

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=os.path.join(HERE, "..", "..", "build-dev", "mailark"))
ap.add_argument("--segment", type=int, default=2000)
ap.add_argument("--hold", default='"power crisis"')
args = ap.parse_args()
maildir = os.path.join(CORPUS, "enron", "maildir")
if not os.path.isdir(maildir):
    raise SystemExit("no Enron maildir under " + CORPUS)
if not shutil.which("faketime"):
    raise SystemExit("faketime is needed (Debian's faketime package)")


with tempfile.TemporaryDirectory(prefix="mailark-retention-bench-") as tmp:
    data = os.path.join(tmp, "data")

    def run(*a, fake=False):
        cmd = [args.bin, "--data", data, *a]
        if fake:
            cmd = ["faketime", "-f", "+40d", *cmd]
        t = time.monotonic()
        p = subprocess.run(cmd, capture_output=True, timeout=3600)
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(a)}: {p.stderr.decode()}")
        return time.monotonic() - t, p.stdout

    run("segments", "policy", "--max-records", str(args.segment))
    t_import, _ = run("import", "--custodian-per-folder", "--no-scan", maildir)
    run("case", "create", "Bench hold")
    run("case", "search", "Bench hold", args.hold, "--save")
    run("case", "hold", "Bench hold", "--reason", "benchmark")
    run("retention", "set", "--default", "30")
    segs = json.loads(run("segments", "--json")[1])["segments"]
    size_before = du(data)
    t_verify_before, out = run("verify", "--json")
    before = json.loads(out)
    t_run, out = run("retention", "run", "--json", fake=True)
    rep = json.loads(out)
    size_after = du(data)
    t_verify_after, out = run("verify", "--json")
    after = json.loads(out)
    assert after["intact"], after
    print(json.dumps({
        "messages": before["records_checked"],
        "segments": len(segs),
        "import_s": round(t_import, 2),
        "expired": rep["expired"],
        "held": rep["held"],
        "retention_run_s": round(t_run, 2),
        "expired_per_s": round(rep["expired"] / t_run),
        "verify_before_s": round(t_verify_before, 2),
        "verify_after_s": round(t_verify_after, 2),
        "records_checked_after": after["records_checked"],
        "records_expired_after": after["records_expired"],
        "tombstones": after["tombstones"],
        "data_bytes_before": size_before,
        "data_bytes_after": size_after,
    }, indent=1))
