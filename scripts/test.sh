#!/usr/bin/env bash
# Installs what mailark needs (Debian 12), builds it, and runs every test.
# Tests that need ../shared/corpus (or $MAILARK_CORPUS) report themselves skipped when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
ctest --test-dir build --output-on-failure -j2
