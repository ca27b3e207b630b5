#!/usr/bin/env python3
"""bench/sigs: a synthetic ClamAV database the size and shape of the official one.

The official database cannot be downloaded here, so this writes one with the same bytes per signature
file as the published composition (the .info files inside main.cvd of 2021-09-16, 6,647,427
signatures, and daily.cvd of 2024-08-18, 2,065,716 signatures):

  main.hsb 168 MB   main.mdb 255 MB   main.ndb 23.7 MB   main.ldb 11.7 MB   main.hdb 5.2 MB
  daily.hsb 120 MB  daily.ldb 74 MB   daily.mdb 4.8 MB   daily.ndu 0.8 MB   daily.ldu 3.5 MB
  daily.ndb 0.2 MB

Signature bodies are random (seeded: the same database every run), so no real mail matches them, but
libclamav loads, compiles and matches against them as it would the real ones: hash signatures go to
its hash tables (and make it hash every scanned file), body and logical signatures to the Aho-Corasick
automata of their target types.

Target types decide what every message pays for. Body and logical signatures for PE files (type 1)
are matched only inside executables; those for any file (0), mail (4), HTML (3) and normalised text
(7) against every message and part. The spread used (the share of each file's signatures):

  .ndb/.ndu   PE 62%  any 12%  HTML 8%  OLE2 5%  ascii 4%  mail 2%  PDF 3%  ELF 2%  Java/other 2%
  .ldb/.ldu   PE 78%  OLE2 5%  HTML 5%  PDF 4%  any 3%  ELF 2%  mail 1%  ascii 1%  Java/other 1%

defended by what the official database is: most of it is Win32 malware (ClamAV's own statistics put
PE at roughly three quarters of logical signatures); document, script and phishing families make most
of the rest; signatures for any file type are a small minority, because they cost every scan.
Subsignatures are 12 to 40 bytes, with wildcards in a fifth of them, as in published signatures.

  python3 bench/sigs/generate.py --out /tmp/sigs [--scale 1.0]
"""
import argparse
import os
import random

MB = 1_000_000
FILES = [
    ("main.hsb", 168.0 * MB), ("main.mdb", 255.0 * MB), ("main.ndb", 23.7 * MB), ("main.ldb", 11.7 * MB),
    ("main.hdb", 5.2 * MB), ("daily.hsb", 120.0 * MB), ("daily.ldb", 74.0 * MB), ("daily.mdb", 4.8 * MB),
    ("daily.ndu", 0.8 * MB), ("daily.ldu", 3.5 * MB), ("daily.ndb", 0.2 * MB),
]
NDB_TARGETS = [(1, 62), (0, 12), (3, 8), (2, 5), (7, 4), (4, 2), (10, 3), (6, 2), (12, 2)]
LDB_TARGETS = [(1, 78), (2, 5), (3, 5), (10, 4), (0, 3), (6, 2), (4, 1), (7, 1), (12, 1)]
FAMILIES = ["Win.Trojan", "Win.Malware", "Doc.Downloader", "Html.Phishing", "Pdf.Exploit", "Unix.Malware",
            "Email.Phishing", "Txt.Trojan", "Java.Exploit", "Win.Packed", "Xls.Dropper", "Js.Trojan"]


class Gen:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.n = 0

    def name(self, prefix=""):
        self.n += 1
        return f"{prefix}{self.rng.choice(FAMILIES)}.Mailark{self.n:07d}-{self.rng.randrange(1, 9999999)}-0"

    def hexbytes(self, n):
        return self.rng.getrandbits(8 * n).to_bytes(n, "big").hex()

    def body(self, lo=12, hi=40):
        # A byte pattern; one in five has a wildcard in the middle, as published signatures do.
        n = self.rng.randrange(lo, hi + 1)
        h = self.hexbytes(n)
        if self.rng.random() < 0.2 and n >= 16:
            cut = self.rng.randrange(6, n - 6) * 2
            wild = self.rng.choice(["??", "*", "{2-8}", "{4}"])
            h = h[:cut] + wild + h[cut:]
        return h

    def target(self, table):
        r = self.rng.randrange(100)
        for t, share in table:
            if r < share:
                return t
            r -= share
        return table[0][0]

    def line(self, ext):
        if ext == "hsb":
            return f"{self.hexbytes(32)}:{self.rng.randrange(512, 8_000_000)}:{self.name()}"
        if ext == "hdb":
            return f"{self.hexbytes(16)}:{self.rng.randrange(512, 8_000_000)}:{self.name()}"
        if ext == "mdb":
            return f"{self.rng.randrange(512, 400_000)}:{self.hexbytes(16)}:{self.name()}"
        if ext in ("ndb", "ndu"):
            t = self.target(NDB_TARGETS)
            offset = self.rng.choice(["EP+0", "EP+16", "*"]) if t == 1 else self.rng.choice(["*", "*", "*", "0"])
            return f"{self.name('PUA.' if ext == 'ndu' else '')}:{t}:{offset}:{self.body()}"
        if ext in ("ldb", "ldu"):
            t = self.target(LDB_TARGETS)
            subs = [self.body() for _ in range(self.rng.choice([2, 2, 3, 3, 4]))]
            expr = "&".join(str(i) for i in range(len(subs)))
            if len(subs) >= 3 and self.rng.random() < 0.3:
                expr = f"(0|1)&{'&'.join(str(i) for i in range(2, len(subs)))}"
            name = self.name("PUA." if ext == "ldu" else "")
            return f"{name};Engine:51-255,Target:{t};{expr};" + ";".join(subs)
        raise ValueError(ext)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the real size (1.0: full size)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    total_sigs = 0
    for i, (name, size) in enumerate(FILES):
        g = Gen(1000 + i)
        ext = name.rsplit(".", 1)[1]
        want = int(size * args.scale)
        written = count = 0
        path = os.path.join(args.out, name)
        with open(path, "w") as f:
            chunk = []
            while written < want:
                line = g.line(ext) + "\n"
                chunk.append(line)
                written += len(line)
                count += 1
                if len(chunk) >= 10000:
                    f.write("".join(chunk))
                    chunk = []
            f.write("".join(chunk))
        total_sigs += count
        print(f"{name:10s} {written / MB:8.1f} MB  {count:9d} signatures")
    print(f"{'total':10s} {sum(os.path.getsize(os.path.join(args.out, n)) for n, _ in FILES) / MB:8.1f} MB  "
          f"{total_sigs:9d} signatures")


if __name__ == "__main__":
    main()
