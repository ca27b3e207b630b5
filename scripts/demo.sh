#!/usr/bin/env bash
# Installs what mailark needs (Debian 12), builds it, imports the demo mailbox into ./mailark-data
# (or $MAILARK_DATA) and shows what the archive holds.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
export MAILARK_DATA="${MAILARK_DATA:-$PWD/mailark-data}"
mailark=build/mailark
echo
echo "== mailark import demo/mailbox.mbox"
$mailark import demo/mailbox.mbox
echo
echo "== mailark stats"
$mailark stats
echo
echo "== mailark search rotterdam"
$mailark search rotterdam
echo
echo "== mailark search '\"customs paperwork\" has:attachment'"
$mailark search '"customs paperwork" has:attachment'
echo
echo "== mailark search verdict:infected   (archived and quarantined, never dropped)"
$mailark search verdict:infected
echo
echo "== mailark verify"
$mailark verify
echo
echo "Data folder: $MAILARK_DATA. Try: $mailark show 1, $mailark search --help"
