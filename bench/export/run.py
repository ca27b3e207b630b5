#!/usr/bin/env python3
"""eDiscovery export and verify-export: messages a second and peak memory (issue: >= 10,000 msg/s
each, flat memory), on the 21,903 Enron messages of ../shared/corpus (imported into a fresh folder,
`import --no-scan`), and on any larger data folder given with --data (306,642 messages: bench/scale),
to show that memory does not grow with the export. Each figure is the median of --rounds runs,
export and verify in alternation; eml and mbox containers both.

  python3 bench/export/run.py [--mailark build/mailark] [--rounds 3] [--data /tmp/mig306]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench", "scale"))
import run as scale  # noqa: E402  (the corpus's Enron files)


def timed(cmd):
    """Wall seconds and peak RSS (KiB) of one command, through GNU time."""
    p = subprocess.run(["/usr/bin/time", "-f", "%e %M", *cmd], capture_output=True)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {p.stderr.decode(errors='replace')[-2000:]}")
    wall, rss = p.stderr.decode().strip().splitlines()[-1].split()
    return float(wall), int(rss), p.stdout


def bench(args, data, label):
    vkey = subprocess.run([args.mailark, "--data", data, "checkpoint", "key"], capture_output=True,
                          check=True).stdout.decode().strip()
    out = os.path.join(args.work, "export.zip")
    rows = []
    for fmt in ("eml", "mbox"):
        ex, ver = [], []
        count = 0
        for _ in range(args.rounds):
            wall, rss, stdout = timed([args.mailark, "--data", data, "export", "", "--out", out, "--format", fmt, "--json"])
            count = json.loads(stdout)["messages"]
            ex.append((wall, rss))
            size = os.path.getsize(out)
            wall, rss, stdout = timed([args.mailark, "verify-export", out, "--key", vkey, "--json"])
            rep = json.loads(stdout)
            if not rep["ok"] or rep["messages"] != count:
                sys.exit(f"verify-export: {rep}")
            ver.append((wall, rss))
        for what, runs in (("export", ex), ("verify-export", ver)):
            wall = statistics.median(w for w, _ in runs)
            rss = max(r for _, r in runs)
            rows.append((label, fmt, what, count, wall, count / wall, rss / 1024, size / 2**20))
            print(f"{label:>10} {fmt:4} {what:13} {count:>8} msgs {wall:7.2f} s {count / wall:9.0f} msg/s "
                  f"peak RSS {rss / 1024:6.1f} MiB  zip {size / 2**20:8.1f} MiB", flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mailark", default=os.path.join(ROOT, "build", "mailark"))
    ap.add_argument("--corpus", default=os.path.join(ROOT, "..", "shared", "corpus"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data", action="append", default=[], help="another data folder to export whole")
    args = ap.parse_args()
    args.messages = 0
    with tempfile.TemporaryDirectory(prefix="mailark-export-bench-") as work:
        args.work = work
        data = os.path.join(work, "enron")
        sources = scale.generate(args, work)
        subprocess.run([args.mailark, "--data", data, "import", "--no-scan", *sources], capture_output=True, check=True)
        bench(args, data, "enron")
        for extra in args.data:
            bench(args, extra, os.path.basename(extra.rstrip("/")))


if __name__ == "__main__":
    main()
