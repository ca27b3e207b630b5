#!/usr/bin/env bash
# Configures and builds mailark in ./build (Ninja, ccache when present). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build
