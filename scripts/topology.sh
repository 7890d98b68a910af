#!/usr/bin/env bash
# Test topology for gtun (see shared DESIGN.md, "Test topology").
#
#   scripts/topology.sh up   [PREFIX]   build it (idempotent: tears down an old one first)
#   scripts/topology.sh down [PREFIX]   remove it (kills processes still inside its namespaces)
#   scripts/topology.sh status [PREFIX] list its namespaces and addresses
#
# PREFIX defaults to "gt"; namespaces are PREFIX-{vm,vm2,gw,node,pod}.
# All veths are created directly inside the namespaces, so nothing touches the
# root namespace and several prefixes can coexist.
#
#  vm2 172.16.0.2 --lan0-- vm 172.16.0.1 | 198.51.100.1 --wan0-- gw 198.51.100.2 | 10.0.0.2
#      --vpc0-- node 10.0.0.3 | 10.244.1.1 --pod0/eth0-- pod 10.244.1.20
#  node: nftables "table ip kubeproxy": 10.96.0.10:80 -> 10.244.1.20:8080
set -euo pipefail

usage() { echo "usage: $0 up|down|status [PREFIX]" >&2; exit 2; }

[ $# -ge 1 ] || usage
CMD=$1
PREFIX=${2:-gt}
if ! [[ $PREFIX =~ ^[A-Za-z0-9][A-Za-z0-9_-]{0,30}$ ]]; then
	echo "topology.sh: bad prefix '$PREFIX' (letters, digits, - and _, at most 31)" >&2
	exit 2
fi

HOSTS=(vm vm2 gw node pod)
ns() { echo "$PREFIX-$1"; }
VM=$(ns vm) VM2=$(ns vm2) GW=$(ns gw) NODE=$(ns node) POD=$(ns pod)

ns_exists() { [ -e "/run/netns/$1" ]; }

# Kill processes that live inside our namespaces (they can only be ours),
# then delete the namespaces; deleting a namespace removes its veths.
down() {
	local h n pids
	for h in "${HOSTS[@]}"; do
		n=$(ns "$h")
		ns_exists "$n" || continue
		pids=$(ip netns pids "$n" 2>/dev/null || true)
		# shellcheck disable=SC2086 # one PID per word
		if [ -n "$pids" ]; then kill -TERM $pids 2>/dev/null || true; fi
	done
	# give them up to 3 s to exit cleanly, then SIGKILL
	local _ left
	for _ in $(seq 30); do
		left=""
		for h in "${HOSTS[@]}"; do
			n=$(ns "$h")
			ns_exists "$n" || continue
			left+=$(ip netns pids "$n" 2>/dev/null || true)
		done
		[ -z "$left" ] && break
		sleep 0.1
	done
	for h in "${HOSTS[@]}"; do
		n=$(ns "$h")
		ns_exists "$n" || continue
		pids=$(ip netns pids "$n" 2>/dev/null || true)
		# shellcheck disable=SC2086 # one PID per word
		if [ -n "$pids" ]; then kill -KILL $pids 2>/dev/null || true; fi
		ip netns del "$n" 2>/dev/null || true
	done
	# the namespace files go away asynchronously in rare cases; check
	for h in "${HOSTS[@]}"; do
		if ns_exists "$(ns "$h")"; then
			echo "topology.sh: could not delete namespace $(ns "$h")" >&2
			return 1
		fi
	done
}

sysctl_ns() { ip netns exec "$1" sysctl -q -w "$2" >/dev/null; }

up() {
	down
	trap 'echo "topology.sh: up failed, tearing down" >&2; down || true' ERR

	local h n
	for h in "${HOSTS[@]}"; do
		n=$(ns "$h")
		ip netns add "$n"
		ip -n "$n" link set lo up
		# no reverse-path filtering anywhere: tunnel and NAT paths are asymmetric by design
		sysctl_ns "$n" net.ipv4.conf.all.rp_filter=0
		sysctl_ns "$n" net.ipv4.conf.default.rp_filter=0
		sysctl_ns "$n" net.ipv4.conf.lo.rp_filter=0
		# no IPv6 noise (DAD, router solicitations) on the test links
		sysctl_ns "$n" net.ipv6.conf.all.disable_ipv6=1 2>/dev/null || true
		sysctl_ns "$n" net.ipv6.conf.default.disable_ipv6=1 2>/dev/null || true
	done

	# veth pairs, created inside the namespaces: name in A, peer name in B
	ip -n "$VM"   link add wan0 mtu 1500 type veth peer name wan0 mtu 1500 netns "$GW"
	ip -n "$VM"   link add lan0 mtu 1500 type veth peer name lan0 mtu 1500 netns "$VM2"
	ip -n "$GW"   link add vpc0 mtu 1500 type veth peer name vpc0 mtu 1500 netns "$NODE"
	ip -n "$NODE" link add pod0 mtu 1500 type veth peer name eth0 mtu 1500 netns "$POD"

	# vm: the source VM. No route to the cluster CIDRs: the tunnel adds them.
	ip -n "$VM" addr add 198.51.100.1/24 dev wan0
	ip -n "$VM" addr add 172.16.0.1/24 dev lan0
	ip -n "$VM" link set wan0 up
	ip -n "$VM" link set lan0 up

	# vm2: a neighbour in VPC A, uses vm as its gateway
	ip -n "$VM2" addr add 172.16.0.2/24 dev lan0
	ip -n "$VM2" link set lan0 up
	ip -n "$VM2" route add default via 172.16.0.1

	# gw: the gateway VM of VPC B, runs gtund
	ip -n "$GW" addr add 198.51.100.2/24 dev wan0
	ip -n "$GW" addr add 10.0.0.2/24 dev vpc0
	ip -n "$GW" link set wan0 up
	ip -n "$GW" link set vpc0 up
	ip -n "$GW" route add 10.244.0.0/16 via 10.0.0.3
	ip -n "$GW" route add 10.96.0.0/12 via 10.0.0.3
	sysctl_ns "$GW" net.ipv4.ip_forward=1

	# node: a k8s node with one pod and a kube-proxy-like ClusterIP DNAT
	ip -n "$NODE" addr add 10.0.0.3/24 dev vpc0
	ip -n "$NODE" addr add 10.244.1.1/24 dev pod0
	ip -n "$NODE" link set vpc0 up
	ip -n "$NODE" link set pod0 up
	# only for the direct-routing baseline in bench.sh; tunnel traffic is
	# masqueraded by gtund, so no route to the tunnel pool here on purpose
	ip -n "$NODE" route add 198.51.100.0/24 via 10.0.0.2
	# Locally generated connections need a route to the service CIDR before
	# the nat output hook can DNAT them (on a real node the default route
	# serves). Not-DNATed service traffic goes nowhere: ARP on pod0 fails.
	ip -n "$NODE" route add 10.96.0.0/12 dev pod0
	sysctl_ns "$NODE" net.ipv4.ip_forward=1
	ip netns exec "$NODE" nft -f - <<'NFT'
table ip kubeproxy {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr 10.96.0.10 tcp dport 80 dnat to 10.244.1.20:8080
	}
	chain output {
		type nat hook output priority -100; policy accept;
		ip daddr 10.96.0.10 tcp dport 80 dnat to 10.244.1.20:8080
	}
}
NFT

	# pod
	ip -n "$POD" addr add 10.244.1.20/24 dev eth0
	ip -n "$POD" link set eth0 up
	ip -n "$POD" route add default via 10.244.1.1

	wait_links_up
	trap - ERR
}

# Veths report carrier asynchronously; wait (up to 3 s) until every link is
# operationally up so callers can send packets right away.
wait_links_up() {
	local _ h n ok
	for _ in $(seq 60); do
		ok=1
		for h in "${HOSTS[@]}"; do
			n=$(ns "$h")
			if ip -n "$n" -br link show type veth | awk '$2 != "UP" {bad=1} END {exit !bad}'; then
				ok=0
				break
			fi
		done
		[ $ok = 1 ] && return 0
		sleep 0.05
	done
	echo "topology.sh: links did not come up:" >&2
	for h in "${HOSTS[@]}"; do ip -n "$(ns "$h")" -br link show type veth >&2; done
	return 1
}

status() {
	local h n
	for h in "${HOSTS[@]}"; do
		n=$(ns "$h")
		if ns_exists "$n"; then
			echo "== $n"
			ip -n "$n" -br addr
			ip -n "$n" route
		else
			echo "== $n (absent)"
		fi
	done
}

if [ "$(id -u)" -ne 0 ]; then
	echo "topology.sh: must run as root" >&2
	exit 1
fi

case $CMD in
up) up ;;
down) down ;;
status) status ;;
*) usage ;;
esac
