#!/usr/bin/env python3
"""Two mailark builds side by side, in alternation, in one run (the machine is shared and noisy):

  import:  each build imports the same messages (`import --no-scan`, a fresh data folder each time);
           the wall time of each run, and the medians.
  startup: whole-command medians of short commands on each build's own folder (made by `import`
           first), with `notmuch --version` beside them.

  search:  every query of bench/scale/run.py's set, whole command, on one data folder given with --data
           (a folder both builds read), one run of each build (and of `notmuch search --limit=20`
           with --notmuch-config) in turn per round, so that the machine's noise falls on all alike;
           the medians and the ratios. With --old-data the old build reads that folder instead (one
           it imported itself: for a change of what the index holds), and each build's search_ms
           (inside the process) is printed beside the whole command, with whether both builds gave
           the same total and the same page.

  python3 bench/scale/ab.py --old /tmp/old/build/mailark --new build/mailark import --messages 306642 --rounds 2
  python3 bench/scale/ab.py --old /tmp/old/build/mailark --new build/mailark startup
  python3 bench/scale/ab.py --old /tmp/old/build/mailark --new build/mailark search \
      --data /tmp/mailark-scale-306k/data-306642 --notmuch-config /tmp/mailark-scale-306k/notmuch-306642.config
  python3 bench/scale/ab.py --old /tmp/old/build/mailark --new build/mailark search --runs 7 \
      --data /tmp/mailark-1m-new/data-1000000 --old-data /tmp/mailark-1m/data-1000000

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


def one_ms(cmd, env=None):
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, env=env)
    if p.returncode != 0:
        sys.exit(f"{cmd}: {p.stderr.decode(errors='replace')[-500:]}")
    return (time.perf_counter() - t) * 1000


def searches(args, bins):
    if not args.data:
        sys.exit("search: --data FOLDER is required")
    if args.old_data:
        return searches_two_folders(args, bins)
    cmds = {}
    for _kind, q, nq in run.QUERIES:
        for name, binary in bins.items():
            cmds[(name, q)] = ([binary, "--data", args.data, "search", "--json", "--limit", "20", q], None)
        if args.notmuch_config:
            cmds[("notmuch", q)] = (["notmuch", "search", "--limit=20", nq],
                                    dict(os.environ, NOTMUCH_CONFIG=args.notmuch_config))
    names = list(bins) + (["notmuch"] if args.notmuch_config else [])
    times = {k: [] for k in cmds}
    for r in range(args.runs):
        for _kind, q, _nq in run.QUERIES:
            for name in (names if r % 2 == 0 else list(reversed(names))):
                cmd, env = cmds[(name, q)]
                times[(name, q)].append(one_ms(cmd, env))
    print("whole command, median ms over", args.runs, "runs each, in alternation")
    print(f"{'query':34}" + "".join(f"{n:>10}" for n in names) + "   new/old" + ("  new/notmuch" if args.notmuch_config else ""))
    for _kind, q, _nq in run.QUERIES:
        med = {n: statistics.median(times[(n, q)]) for n in names}
        line = f"{q:34}" + "".join(f"{med[n]:10.2f}" for n in names) + f"{med['new'] / med['old']:10.2f}"
        if args.notmuch_config:
            line += f"{med['new'] / med['notmuch']:13.2f}"
        print(line, flush=True)


def searches_two_folders(args, bins):
    import json
    folders = {"old": args.old_data, "new": args.data}

    def once(name, q):
        t = time.perf_counter()
        p = subprocess.run([bins[name], "--data", folders[name], "search", "--json", "--limit", "20", q],
                           capture_output=True, text=True)
        whole = (time.perf_counter() - t) * 1000
        if p.returncode != 0:
            sys.exit(f"{name} {q}: {p.stderr[-500:]}")
        j = json.loads(p.stdout)
        return j["search_ms"], whole, (j["total"], [h["id"] for h in j["results"]])

    print(f"median ms over {args.runs} runs each, in alternation: inside the process / whole command")
    print(f"{'query':40}{'old':>18}{'new':>18}  new/old inside  same page and total")
    for _kind, q, _nq in run.QUERIES:
        first = {name: once(name, q)[2] for name in bins}  # untimed: the page cache
        times = {name: [] for name in bins}
        for r in range(args.runs):
            for name in (list(bins) if r % 2 == 0 else list(reversed(list(bins)))):
                times[name].append(once(name, q)[:2])
        med = {n: (statistics.median(t[0] for t in times[n]), statistics.median(t[1] for t in times[n])) for n in bins}
        print(f"{q:40}" + "".join(f"{med[n][0]:8.1f} / {med[n][1]:6.1f}" for n in bins) +
              f"{med['new'][0] / med['old'][0]:16.2f}  {first['old'] == first['new']}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["import", "startup", "search"])
    ap.add_argument("--old", required=True, help="the build to compare against")
    ap.add_argument("--new", default=os.path.join(ROOT, "build", "mailark"))
    ap.add_argument("--messages", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=40, help="startup: runs of each command for its median")
    ap.add_argument("--work", default="/tmp/mailark-ab")
    ap.add_argument("--corpus", default=os.path.join(ROOT, "..", "shared", "corpus"))
    ap.add_argument("--data", help="search: the data folder both builds search")
    ap.add_argument("--notmuch-config", help="search: also run notmuch on its database of the same messages")
    ap.add_argument("--old-data", help="search: the old build searches this folder (else --data)")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    bins = {"old": args.old, "new": args.new}
    {"import": imports, "startup": startup, "search": searches}[args.mode](args, bins)


if __name__ == "__main__":
    main()
