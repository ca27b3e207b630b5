#!/usr/bin/python3
"""What a data folder's index holds, by term prefix, and how many body pair terms a shorter list of
pair words would keep (docs/BENCHMARKS.md, "Fewer pair words: measured, not adopted").

  /usr/bin/python3 bench/scale/pair_postings.py DATA

Reads the shards of DATA/index with Xapian's Python bindings (Debian's python3-xapian, installed by
scripts/setup.sh; run with the system's python3). Prints the postings and terms of each prefix (pair
terms: XP for the free text's, XPXE for the extracted text's, XP<field> for a short field's), then, for the pair words ranked by the
index's own document frequency, the body pair terms and postings left if only the words at rank
below K were pair words."""
import collections
import glob
import os
import sys

import xapian

RANKS = (1000, 700, 500, 400, 300, 200, 100)


def prefix_of(term):
    i = 0
    while i < len(term) and 65 <= term[i] <= 90:  # prefixes are upper-case ASCII
        i += 1
    return term[:i].decode() or "(words)"


def main():
    data = sys.argv[1]
    dbs = [xapian.Database(s) for s in sorted(glob.glob(os.path.join(data, "index", "shard*")))
           + sorted(glob.glob(os.path.join(data, "index", "segment-*", "shard*")))]
    postings, terms = collections.Counter(), collections.Counter()
    for db in dbs:
        for t in db.allterms():
            p = prefix_of(t.term)
            postings[p] += t.termfreq
            terms[p] += 1
    total = sum(postings.values())
    print(f"documents {sum(db.get_doccount() for db in dbs)}, postings {total}, terms {sum(terms.values())}")
    for p, v in postings.most_common():
        print(f"  {p:20s} postings {v:10d} ({100 * v / total:4.1f}%)  terms {terms[p]:9d}")

    with open(os.path.join(data, "index", "pair-words")) as f:
        words = [w.strip() for w in f.read().split("\n")[1:] if w.strip()]
    df = {w: sum(db.get_termfreq(w) for db in dbs) for w in words}
    rank = {w: i for i, w in enumerate(sorted(words, key=lambda w: (-df[w], w)))}
    kept = {k: [0, 0] for k in RANKS}
    for db in dbs:
        for t in db.allterms(b"XP"):
            if prefix_of(t.term) != "XP":  # the free text's pair terms
                continue
            pair = t.term[2:].decode(errors="replace").split(" ")
            if len(pair) != 2 or pair[0] not in rank or pair[1] not in rank:
                continue
            worst = max(rank[pair[0]], rank[pair[1]])
            for k in RANKS:
                if worst < k:
                    kept[k][0] += 1
                    kept[k][1] += t.termfreq
    print(f"body pair terms kept with the {len(words)} pair words cut to the first K by document frequency:")
    for k in RANKS:
        print(f"  K {k:5d}: terms {kept[k][0]:9d}, postings {kept[k][1]:10d}")


if __name__ == "__main__":
    main()
