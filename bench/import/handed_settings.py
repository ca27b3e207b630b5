#!/usr/bin/env python3
"""bench/import/handed_settings.py: an import handed to a running server, with the server's default
[archive] settings and with batchier ones (group_commit_linger_ms = 50, index_commit_interval_ms =
10000), alternated twice; prints each import command's time. Needs the Maildir that
`bench/import/run.py --work /tmp/bench-hand` lays out and the real-size set of bench/sigs/generate.py.

  python3 bench/import/handed_settings.py [MAILARK] [MAILDIR] [SIGNATURES]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from handed_ab import handed_import  # noqa: E402

M = sys.argv[1] if len(sys.argv) > 1 else "build-dev/mailark"
maildir = sys.argv[2] if len(sys.argv) > 2 else "/tmp/bench-hand/maildir"
SIGS = sys.argv[3] if len(sys.argv) > 3 else "/tmp/sigs-full"
for _ in range(2):
    handed_import("default", M, maildir, SIGS)
    handed_import("batchy", M, maildir, SIGS, "group_commit_linger_ms = 50\nindex_commit_interval_ms = 10000")
