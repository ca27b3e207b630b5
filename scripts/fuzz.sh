#!/usr/bin/env bash
# Builds every libFuzzer target (clang; ASan + UBSan; fuzz/) in ./build-fuzz and runs each for SECONDS,
# seeded from fuzz/seeds, fuzz/regressions and, where it fits, ../shared/corpus (or $MAILARK_CORPUS),
# read in place. Exits non-zero on any crash, leak, timeout or out-of-memory; the input that caused it is
# left in build-fuzz/artifacts/<target>/ (add it to fuzz/regressions/<target>/ once fixed).
#
#   bash scripts/fuzz.sh SECONDS [TARGET...]        e.g. bash scripts/fuzz.sh 30
#   MAILARK_FUZZ_RUNS=5000000 bash scripts/fuzz.sh 7200   stop each target after that many executions
#   MAILARK_FUZZ_CHUNK=500000 ...  restart the fuzzer every that many executions (the corpus carries
#                                 over): an instrumented process slows down as its memory grows, the
#                                 query target from 1,200 to under 400 executions a second
#   MAILARK_FUZZ_TIMEOUT=60 ...   seconds one input may take before it counts as a hang (default 10)
#   MAILARK_FUZZ_RSS_MB=6144 ...  memory limit (default 2048): the instrumented process grows over
#                                 millions of executions (query: ~0.7 KB each) while the same inputs
#                                 replayed in a plain build stay flat, so long campaigns raise it
#
# What each target reached is printed at the end (executions, coverage), as docs/BENCHMARKS.md quotes.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then targets=(smtp_session message query record config http_request imap_response imap_command mime_tree html message_view checkpoint export pst extract handoff scan_verdict smtp_reply); fi
corpus="${MAILARK_CORPUS:-$PWD/../shared/corpus}"

CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMAILARK_FUZZ=ON \
  -DBUILD_TESTING=OFF >/dev/null
cmake --build build-fuzz

failed=0
summary=()
for stem in "${targets[@]}"; do
  bin="build-fuzz/fuzz/${stem}_fuzz"
  work="build-fuzz/corpus/$stem"          # kept between runs on one machine: fuzzing resumes
  artifacts="build-fuzz/artifacts/$stem/"
  mkdir -p "$work" "$artifacts"
  seeds=()
  for d in "fuzz/seeds/$stem" "fuzz/regressions/$stem"; do [ -d "$d" ] && seeds+=("$d"); done
  extra=(-max_len=65536)
  case "$stem" in
    smtp_session) extra+=(-dict=fuzz/dict/smtp.dict) ;;
    query) extra=(-max_len=4096 -dict=fuzz/dict/query.dict) ;;
    config) extra+=(-dict=fuzz/dict/toml.dict) ;;
    html) extra+=(-dict=fuzz/dict/html.dict) ;;
    message_view)
      extra=(-max_len=65536 -dict=fuzz/dict/mime.dict)
      seeds+=(fuzz/seeds/mime_tree)
      [ -d "$corpus/mime-edge" ] && seeds+=("$corpus/mime-edge") ;;
    message)
      extra=(-max_len=65536 -dict=fuzz/dict/mime.dict)
      for d in "$corpus/mime-edge" "$corpus/spamassassin/spam"; do [ -d "$d" ] && seeds+=("$d"); done ;;
  esac
  log="build-fuzz/$stem.log"
  echo "== $stem: ${seconds}s"
  : >"$log"
  total_runs="${MAILARK_FUZZ_RUNS:-0}"
  chunk="${MAILARK_FUZZ_CHUNK:-0}"
  execs=0
  rc=0
  deadline=$((SECONDS + seconds))
  while :; do
    left=$((deadline - SECONDS))
    runs=()
    want=0
    if ((total_runs > 0)); then want=$((total_runs - execs)); fi
    if ((chunk > 0 && (want == 0 || chunk < want))); then want=$chunk; fi
    if ((want > 0)); then runs=(-runs="$want"); fi
    set +e
    "$bin" "$work" "${seeds[@]}" -max_total_time="$left" "${runs[@]}" -rss_limit_mb="${MAILARK_FUZZ_RSS_MB:-2048}" \
      -print_final_stats=1 -artifact_prefix="$artifacts" "${extra[@]}" -timeout="${MAILARK_FUZZ_TIMEOUT:-10}" >"$log.run" 2>&1
    rc=$?
    set -e
    cat "$log.run" >>"$log"
    done_now=$(grep -E '^stat::number_of_executed_units' "$log.run" | awk '{print $2}' | tail -1 || true)
    rm -f "$log.run"
    execs=$((execs + ${done_now:-0}))
    echo "   $stem: ${done_now:-0} executions this run, $execs in all"
    if ((rc != 0 || chunk == 0 || SECONDS >= deadline)); then break; fi
    if ((total_runs > 0 && execs >= total_runs)); then break; fi
    echo "--- restart after $execs executions" >>"$log"
  done
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 || true)
  if [ "$rc" -ne 0 ]; then
    failed=1
    echo "FAILED: $stem (exit $rc); see $log and $artifacts"
    grep -E 'ERROR|SUMMARY' "$log" | head -5 || true
  fi
  summary+=("$(printf '%-14s %12s executions  %s  %s' "$stem" "$execs" "${cov:-}" "$([ "$rc" -eq 0 ] && echo ok || echo FAILED)")")
done
echo
printf '%s\n' "${summary[@]}"
exit "$failed"
