#!/usr/bin/env python3
"""Two mailark builds side by side, in alternation, in one run (the machine is shared and noisy):

  import:  each build imports the same messages (`import --no-scan`, a fresh data folder each time);
           the wall time of each run, and the medians.
  startup: whole-command medians of short commands on each build's own folder (made by `import`
           first), with `notmuch --version` beside them.

  python3 bench/scale/ab.py --old /tmp/old/build/mailark --new build/mailark import --messages 306642 --rounds 2
  python3 bench/scale/ab.py --old /tmp/old/build/mailark --new build/mailark startup

--messages 0 (the default) imports the 21,903 Enron messages of ../shared/corpus as they are; more are
generated from them as bench/scale/run.py does (with new Message-IDs)."""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (bench/scale/run.py: the corpus and its copies)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QUERIES = [["search", "zzzznotaword"], ["search", '"pipeline rupture"'], ["search", 'from:"kenneth lay"'],
           ["search", '"power crisis"'], ["show", "1"]]


def folder(args, name):
    return os.path.join(args.work, f"data-{name}")


def imports(args, bins):
    sources = run.generate(args, args.work)
    times = {name: [] for name in bins}
    for r in range(args.rounds):
        order = list(bins.items()) if r % 2 == 0 else list(reversed(bins.items()))
        for name, binary in order:
            shutil.rmtree(folder(args, name), ignore_errors=True)
            t = time.perf_counter()
            p = subprocess.run([binary, "--data", folder(args, name), "import", "--no-scan", *sources], capture_output=True)
            if p.returncode != 0:
                sys.exit(f"{name}: import failed: {p.stderr.decode(errors='replace')[-2000:]}")
            times[name].append(time.perf_counter() - t)
            print(f"{name} import {times[name][-1]:.2f} s", flush=True)
    for name, ts in times.items():
        print(f"{name}: median {statistics.median(ts):.2f} s, all {', '.join(f'{t:.2f}' for t in ts)}")


def whole_ms(cmd, n):
    xs = []
    for _ in range(n):
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True)
        xs.append(time.perf_counter() - t)
        if p.returncode != 0:
            sys.exit(f"{cmd}: {p.stderr.decode(errors='replace')[-500:]}")
    return statistics.median(xs) * 1000


def startup(args, bins):
    for name in bins:
        if not os.path.isdir(folder(args, name)):
            sys.exit(f"no {folder(args, name)}: run the import mode first")
    for r in range(args.rounds):
        for name, binary in bins.items():
            cells = [f"{' '.join(q)}={whole_ms([binary, '--data', folder(args, name), *q], args.runs):.2f}" for q in QUERIES]
            print(name, "  ".join(cells), flush=True)
        if shutil.which("notmuch"):
            print(f"notmuch --version={whole_ms(['notmuch', '--version'], args.runs):.2f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["import", "startup"])
    ap.add_argument("--old", required=True, help="the build to compare against")
    ap.add_argument("--new", default=os.path.join(ROOT, "build", "mailark"))
    ap.add_argument("--messages", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=40, help="startup: runs of each command for its median")
    ap.add_argument("--work", default="/tmp/mailark-ab")
    ap.add_argument("--corpus", default=os.path.join(ROOT, "..", "shared", "corpus"))
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    bins = {"old": args.old, "new": args.new}
    (imports if args.mode == "import" else startup)(args, bins)


if __name__ == "__main__":
    main()
