#!/usr/bin/env bash
# System programs some tests drive (they skip with a reason when a program is missing): Chromium for the
# dashboard test, docker-compose for docker-compose.yml, iptables/iproute2 for the network fault tests, and podman
# (runc runtime, dnsname plugin) with debootstrap for the container cluster test (tests/test_containers.py).
# Installs what is missing when run as root on a Debian-like system; otherwise says what it skipped.
set -u

# podman's defaults fail on these machines (crun cannot set rlimits, and the cgroup layout is hybrid):
# runc and cgroupfs work. Written only where no containers.conf exists, so a machine's own settings stay.
containers_conf() {
  [ "$(id -u)" = 0 ] && command -v podman >/dev/null 2>&1 || return 0
  [ -e /etc/containers/containers.conf ] && return 0
  mkdir -p /etc/containers
  cat > /etc/containers/containers.conf <<'CONF'
[containers]
default_ulimits = []
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
CONF
}

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
if [ "${SWARM_CONTAINER_TESTS:-}" != 0 ]; then  # the container test, part of make test (0 leaves it out)
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  command -v runc >/dev/null 2>&1 || missing+=(runc)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  # compose service names resolve through this CNI plugin (podman 4 with CNI networking, as on Debian 12)
  [ -e /usr/lib/cni/dnsname ] || missing+=(golang-github-containernetworking-plugin-dnsname)
fi
if [ ${#missing[@]} -eq 0 ]; then
  containers_conf
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages for the tests: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  known=()   # a package this release lacks would fail the whole install
  for package in "${missing[@]}"; do
    if apt-cache show "$package" >/dev/null 2>&1; then known+=("$package"); else echo "no package $package here"; fi
  done
  [ ${#known[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${known[@]}" >/dev/null \
    || echo "could not install ${known[*]}; the tests that need them will be skipped"
  containers_conf
else
  echo "not root or no apt-get: tests needing ${missing[*]} will be skipped"
fi
exit 0
