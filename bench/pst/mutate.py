"""How often libpst fails on damaged PSTs: copies of the corpus PSTs with 1 to 64 random bytes
changed, each read by `mailark pst-read` (the child an import reads a PST through), counting deaths by
signal and hangs (docs/BENCHMARKS.md "PST import and the audit log").

Usage: python3 bench/pst/mutate.py [--bin build-dev/mailark] [--runs 300] [--seed 1] [--keep DIR]
"""
import argparse
import glob
import os
import random
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.environ.get("MAILARK_CORPUS", os.path.join(HERE, "..", "..", "..", "shared", "corpus"))

ap = argparse.ArgumentParser()
ap.add_argument("--bin", default=os.path.join(HERE, "..", "..", "build-dev", "mailark"))
ap.add_argument("--runs", type=int, default=300)
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--keep", help="a folder to keep the files that crashed libpst in")
args = ap.parse_args()
random.seed(args.seed)
files = sorted(glob.glob(os.path.join(CORPUS, "pst", "*", "*.pst")))
if not files:
    raise SystemExit("no PST files under " + CORPUS)
crashes = hangs = 0
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "m.pst")
    for i in range(args.runs):
        data = bytearray(open(random.choice(files), "rb").read())
        for _ in range(random.choice([1, 4, 16, 64])):
            data[random.randrange(len(data))] = random.randrange(256)
        with open(path, "wb") as f:
            f.write(data)
        try:
            r = subprocess.run([args.bin, "pst-read", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=10)
        except subprocess.TimeoutExpired:
            hangs += 1
            continue
        if r.returncode < 0:
            crashes += 1
            if args.keep:
                os.makedirs(args.keep, exist_ok=True)
                os.replace(path, os.path.join(args.keep, f"crash{crashes}.pst"))
print(f"runs {args.runs} crashes {crashes} hangs {hangs}")
