#!/usr/bin/env bash
# Installs the Debian packages the test topology, demo and bench need.
# Idempotent: silent and fast when everything is present; runs
# `apt-get update` once, only when something is missing.
set -euo pipefail

# systemd: systemd-analyze, which make test runs on the units (test/install).
# dnsutils: dig, for the split DNS tests.
# man-db, groff-base: man --warnings on the man pages (docs/man).
# lintian: checks the Debian packages of make deb (test/release).
# etcd-server, etcd-client: etcd and etcdctl (3.4 in Debian 12), a real
# etcd for the store's tests (pkg/store, test/integration/ha_test.go).
PKGS=(iproute2 nftables iperf3 iputils-ping curl tcpdump procps systemd dnsutils man-db groff-base lintian etcd-server etcd-client)

missing=()
for p in "${PKGS[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
		missing+=("$p")
	fi
done

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "deps.sh: missing packages: ${missing[*]} (need root to install them)" >&2
	exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "deps.sh: missing packages: ${missing[*]} and no apt-get on this system" >&2
	exit 1
fi

echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -qq >/dev/null; then
	echo "deps.sh: apt-get update failed; cannot install ${missing[*]}" >&2
	exit 1
fi
# iperf3's postinst asks whether to start a daemon; answer no.
echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections 2>/dev/null || true
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
	echo "deps.sh: apt-get install ${missing[*]} failed" >&2
	exit 1
fi
# etcd-server enables and starts a system etcd; the tests run their own.
if [[ " ${missing[*]} " == *" etcd-server "* ]] && command -v systemctl >/dev/null 2>&1; then
	systemctl disable --now etcd >/dev/null 2>&1 || true
fi
