#!/usr/bin/env bash
# Installs every Debian 12 package that mailark's build, tests and benchmarks need.
# Idempotent: packages already present are left alone, so a second run costs one dpkg query.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build pkg-config ccache git
  # the engine's libraries
  libxapian-dev liblmdb-dev libclamav-dev libzstd-dev libssl-dev nettle-dev libgmime-3.0-dev libglib2.0-dev
  nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev libasio-dev libtomlplusplus-dev libunbound-dev
  libboost-dev libcurl4-openssl-dev libldap-dev libgumbo-dev libarchive-dev libpst-dev libgoogle-perftools-dev
  # attachment text (the mailark-extract worker): PDF, Office Open XML, OpenDocument
  libpoppler-cpp-dev libzip-dev libxml2-dev libseccomp-dev
  # Unicode normalization of the index's words (common/unicode_form.cc); Thai, Lao, Khmer and
  # Burmese words (ICU's word breaks, indexer/word_breaks.cc)
  libunistring-dev libicu-dev
  # internationalised domain names in A-labels for DNS and servers without SMTPUTF8 (api/dns.cc)
  libidn2-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev clamav-testfiles python3 zip swaks libnet-ssleay-perl openssl postfix dnsmasq-base
  dovecot-core dovecot-imapd dovecot-dev autoconf automake libtool curl isync neomutt tmux slapd ldap-utils
  chromium chromium-driver python3-selenium python3-cryptography
  # remote index segments (xapian-tcpsrv; tests/e2e/test_segments.py, which also uses Xapian's
  # Python bindings to make shards as an older release wrote them)
  xapian-tools python3-xapian
  # fuzzing (libFuzzer) and the sanitizer build
  clang libclang-rt-14-dev
  # peers the benchmark compares against
  notmuch maildir-utils clamav-daemon clamav-milter
  # readpst, the PST peer of tests/e2e/test_pst.py (libpst's own converter)
  pst-utils
  # pdftotext, the PDF peer of tests/e2e/test_extract.py (poppler's own converter)
  poppler-utils
  # faketime: retention runs as if days had passed (tests/e2e/test_retention.py)
  faketime
  # Cyrus SASL's PLAIN for Postfix's SMTP client (test_imap.py test_submission_from_a_postfix_relaying_with_sasl)
  libsasl2-modules
  # mdb_stat, for the free pages of a segment store (docs/BENCHMARKS.md "Segment stores")
  lmdb-utils
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present"
fi
