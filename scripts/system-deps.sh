#!/usr/bin/env bash
# System programs some tests drive (they skip with a reason when a program is missing): Chromium for the
# dashboard test, docker-compose to validate docker-compose.yml, iptables/iproute2 for the network fault tests.
# Installs what is missing when run as root on a Debian-like system; otherwise says what it skipped.
set -u
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages for the tests: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || echo "could not install ${missing[*]}; the tests that need them will be skipped"
else
  echo "not root or no apt-get: tests needing ${missing[*]} will be skipped"
fi
exit 0
