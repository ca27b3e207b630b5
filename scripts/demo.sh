#!/usr/bin/env bash
# Installs what mailark needs (Debian 12), builds it, imports the demo mailbox into ./mailark-data
# (or $MAILARK_DATA), shows what the archive holds, then runs `mailark serve` on the embedded default
# (SMTP on 127.0.0.1:2525 inbound and 127.0.0.1:2587 outbound, submission on 127.0.0.1:1587, IMAP on
# 127.0.0.1:1143, the web
# portal on http://127.0.0.1:8080) until Ctrl-C.
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
echo "== mailark user add ana.ortega@northwind.example   (password: demo, an admin; her archived mail lands in her folders)"
if ! $mailark user list | grep -q '^ana.ortega@northwind.example '; then
  echo demo | $mailark user add ana.ortega@northwind.example --name "Ana Ortega" --role admin --password-stdin
fi
cat <<TXT

Data folder: $MAILARK_DATA. Starting the SMTP gateway on the embedded default (Ctrl-C stops it).
From another terminal, send it a message and find it:

  swaks --server 127.0.0.1:2525 --to ana.ortega@northwind.example --from you@example.org \\
        --header "Subject: Crane schedule" --body "Berth 5 is free on Monday."
  $mailark search 'subject:crane'
  $mailark show 1

Open the web portal at http://127.0.0.1:8080 and log in as ana.ortega@northwind.example with the
password demo: her inbox, search, writing mail, and (she is an admin) the dashboard with the panic
button. Scripts use the REST API (docs/API.md) with a token:

  TOKEN=\$($mailark user token ana.ortega@northwind.example add demo-script)
  curl -H "Authorization: Bearer \$TOKEN" 'http://127.0.0.1:8080/api/v1/search?q=rotterdam'

Read Ana's mailbox over IMAP (STARTTLS on 1143; any IMAP client works, e.g. Thunderbird with
user ana.ortega@northwind.example, password demo, accepting the self-signed certificate):

  curl -k --ssl-reqd -u ana.ortega@northwind.example:demo imap://127.0.0.1:1143/INBOX -X 'FETCH 1:* (FLAGS ENVELOPE)'

Send as Ana through submission (STARTTLS on 1587, then AUTH PLAIN):

  swaks --server 127.0.0.1:1587 --tls --auth PLAIN --auth-user ana.ortega@northwind.example \\
        --auth-password demo --from ana.ortega@northwind.example --to ana.ortega@northwind.example \\
        --header "Subject: Sent from the archive"

A continuity drill (the demo has no primary server: events only change the record):

  $mailark continuity start --reason drill
  $mailark continuity
  curl -H "Authorization: Bearer \$(cat $MAILARK_DATA/admin-token)" http://127.0.0.1:8025/api/continuity
  $mailark continuity stop

TXT
exec $mailark serve
