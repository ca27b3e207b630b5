#!/usr/bin/env python3
"""bench/smtp/rounds.py: mail.py's mailark-against-plain-Postfix run, several times over, for a figure
that one noisy hour does not decide. Each round is one `mail.py --only mailark,postfix` (a fresh
mailark, then a fresh Postfix, on the same messages); the ratios of the rounds are listed, and their
median is the figure.

  python3 bench/smtp/rounds.py --rounds 5 -- --mailark build-dev/mailark --signatures /tmp/sigs-full --messages 10000

Arguments after `--` go to mail.py as they are (--data-from, --sessions, ...); MAILARK_BENCH_EXTRA
passes through the environment.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("rest", nargs=argparse.REMAINDER, help="-- then mail.py's arguments")
    args = ap.parse_args()
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    if any(a == "--only" or a.startswith("--only=") for a in rest):
        sys.exit("rounds.py runs mailark and plain Postfix itself: leave --only out")
    rows = []
    for i in range(args.rounds):
        p = subprocess.run([sys.executable, os.path.join(HERE, "mail.py"), "--only", "mailark,postfix"] + rest,
                           capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"round {i + 1}: mail.py failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        rate = {}
        for name in ("mailark", "postfix"):
            m = re.search(rf"^{name}\s+(\d+)\s", p.stdout, re.M)
            if not m:
                sys.exit(f"round {i + 1}: no rate for {name} in:\n{p.stdout[-2000:]}")
            rate[name] = int(m.group(1))
        refused = re.search(r"^mailark\s+\d+\s+\S+\s+\S+\s+\S+\s+(\d+)", p.stdout, re.M)
        rows.append((rate["mailark"], rate["postfix"], int(refused.group(1)) if refused else -1))
        print(f"round {i + 1}: mailark {rate['mailark']} msg/s, plain Postfix {rate['postfix']} msg/s, "
              f"{rate['mailark'] / rate['postfix']:.2f}x (not 250 from mailark: {rows[-1][2]})", flush=True)
    ratios = [m / p for m, p, _ in rows]
    print(f"\nmailark / plain Postfix over {len(rows)} rounds: median {statistics.median(ratios):.2f}x, "
          f"range {min(ratios):.2f}-{max(ratios):.2f}x (target >= 1.0)")


if __name__ == "__main__":
    main()
