#!/usr/bin/env python3
"""What one query can cost, two builds side by side in alternation (docs/BENCHMARKS.md "The bounds of
one query"): ORs of many words, long phrases of a word the texts repeat, wildcards of one letter and many wildcards of a few hundred words each,
against a data folder both builds read. A build with the bounds (indexer/index.h kMaxQueryTerms,
kMaxPhraseWords, kMaxWildcardWords) refuses those past them; the time to refuse is shown.

  python3 bench/scale/bounds.py --old /tmp/old/mailark --new build/mailark --data /tmp/imp-prof --runs 3"""
import argparse
import statistics
import subprocess
import time


def ors(n):
    return " OR ".join(f"w{i}" for i in range(n))


def the(n):
    return '"' + " ".join(["the"] * n) + '"'


# 220 three-letter beginnings of 50 to 950 words each in the 21,903 Enron messages' index (not AND, OR,
# NOT, XOR, ADJ, NEAR): as wildcards OR'ed, a query of 1,756 characters (the web portal takes 2,000).
PREFIXES = (
    "con pro com dis int pre mar tra sta cha res rec car per for sch str par ove har gra sha rea sub exp "
    "ste bar cor col man und app ins the sto rep pri cal che inf acc bra mon new bro imp sup des ind sho "
    "mis inc spe dec pla del cou fre min she out bri ref wor tri fin chi cla hea red can ass wil bre ret "
    "all han inv san win cas cre gre gen met reg shi bla lin mer def rem ban pol bur mor pos rel sal ter "
    "ber cap fra rev nor sur tel bal rei aut her mat mil qua bel ent lan cat cra pet cro tre uni att dep "
    "ene mul spa pat ant pen sea ver ele ext mic bac ben exc pan fla gro whi dev cle gar mcc scr ser val "
    "wes sco spo dem flo pur qui sol mai mal adv ann hol off pra sca tru det enr gri non ros sou thr cur "
    "lea sen cli div kar mac net sti stu war dan dar fir pow wal cri mas spi ten uns bea blo den glo boo "
    "cen coo fri por rat ren sec sim spr unc aaa emp dra ame bus enc hou nat pas cam ").split()


def wildcards(n):
    return " OR ".join(p + "*" for p in PREFIXES[:n])


QUERIES = [("1,000 words OR'ed", ors(1000)), ("2,000 words OR'ed", ors(2000)), ("5,000 words OR'ed", ors(5000)),
           ('"the" x20', the(20)), ('"the" x64', the(64)), ('"the" x100', the(100)), ('"the" x300', the(300)),
           ("a*", "a*"), ("enr*", "enr*"), ("220 wildcards OR'ed", wildcards(220)),
           ('"the" x64, 7 phrases OR\'ed', " OR ".join([the(64)] * 7)), ('"please let me know"', '"please let me know"')]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True)
    ap.add_argument("--new", required=True)
    ap.add_argument("--data", required=True, help="a data folder both builds read")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    for name, q in QUERIES:
        times = {"old": [], "new": []}
        said = {}
        for r in range(args.runs):
            order = [("old", args.old), ("new", args.new)]
            for key, binary in order if r % 2 == 0 else reversed(order):
                t = time.perf_counter()
                p = subprocess.run([binary, "--data", args.data, "search", q], capture_output=True, timeout=args.timeout)
                times[key].append(time.perf_counter() - t)
                out = p.stdout.decode(errors="replace").strip().splitlines()
                err = p.stderr.decode(errors="replace").strip().splitlines()
                said[key] = out[-1] if p.returncode == 0 and out else (err[0] if err else f"exit {p.returncode}")
        print(f"{name:24s} old {statistics.median(times['old']):8.3f} s  new {statistics.median(times['new']):8.3f} s"
              f"   old: {said['old']}   new: {said['new']}", flush=True)


if __name__ == "__main__":
    main()
