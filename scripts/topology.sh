#!/usr/bin/env bash
# Test topology for gtun (see shared DESIGN.md, "Test topology").
#
#   scripts/topology.sh up   [PREFIX] [--wanemu] [--cluster2] [--ipv6] [--replicas]
#                                                 build it (idempotent: tears down an old one first)
#   scripts/topology.sh down [PREFIX]             remove it (kills processes still inside its namespaces)
#   scripts/topology.sh status [PREFIX]           list its namespaces and addresses
#   scripts/topology.sh wanemu PREFIX DELAY_MS LOSS_PCT [SEED]
#                                                 (re)start the WAN emulator (--wanemu topologies);
#                                                 SEED (a positive integer) fixes its loss draws
#   scripts/topology.sh wanemu-stats PREFIX       the emulator's counters (JSON)
#   scripts/topology.sh blackhole PREFIX on|off   drop everything on the emulated link, or stop
#
# PREFIX defaults to "gt"; namespaces are PREFIX-{vm,vm2,gw,node,pod}
# (plus PREFIX-{gw2,node2,pod2} with --cluster2, PREFIX-wan with --wanemu).
# All veths are created directly inside the namespaces, so nothing touches the
# root namespace and several prefixes can coexist.
#
#  vm2 172.16.0.2 --lan0-- vm 172.16.0.1 | 198.51.100.1 --wan0-- gw 198.51.100.2 | 10.0.0.2
#      --vpc0-- node 10.0.0.3 | 10.244.1.1 --pod0/eth0-- pod 10.244.1.20
#  node: nftables "table ip kubeproxy": 10.96.0.10:80 -> 10.244.1.20:8080,
#        10.96.0.10:53 (udp, tcp) -> 10.244.1.20:53 (kube-dns; tools/poddns plays it)
#
# With --cluster2 (or CLUSTER2=1) a second cluster is added, with the SAME
# internal addressing as the first (overlapping CIDRs, as two kubeadm
# clusters have), reachable from vm on its own wan link:
#
#  vm 198.51.100.1 (wan2, unnumbered: route 198.51.100.3/32 dev wan2) --wan2/wan0--
#      gw2 198.51.100.3 | 10.0.0.2 --vpc0-- node2 10.0.0.3 | 10.244.1.1 --pod0/eth0-- pod2 10.244.1.20
#  node2: the same kube-proxy DNAT 10.96.0.10:80 -> 10.244.1.20:8080 (and :53)
#
# gw2's wan link never goes through the WAN emulator.
#
# With --ipv6 (or IPV6=1) every link is dual-stack (otherwise IPv6 is off in
# every namespace: no DAD, router solicitations or MLD noise), with DAD off
# (addresses are usable at once) and no router advertisements:
#
#  vm2 fd00:172:16::2 --lan0-- vm fd00:172:16::1 | 2001:db8:100::1 --wan0--
#      gw 2001:db8:100::2 | fd00:10::2 --vpc0-- node fd00:10::3 | fd00:10:244:1::1
#      --pod0/eth0-- pod fd00:10:244:1::20
#  gw routes fd00:10:244::/56 and fd00:10:96::/112 via the node; node:
#  "table ip6 kubeproxy": [fd00:10:96::10]:80 -> [fd00:10:244:1::20]:8080,
#  :53 (udp, tcp) -> the pod's :53. With --cluster2, cluster 2's inside is
#  addressed the same (its wan link stays IPv4).
# With --replicas (or REPLICAS=1) the first cluster gets two more gateways,
# gwb and gwc, for gtund replicas sharing one etcd store: each on its own
# wan link from vm (unnumbered on vm's side, like gw2's) and its own vpc
# link to node, and etcd's addresses on node's loopback:
#
#  vm --wanb/wan0-- gwb 198.51.100.4 | 10.0.1.2 --vpcb/vpc0-- node 10.0.1.3
#  vm --wanc/wan0-- gwc 198.51.100.5 | 10.0.2.2 --vpcc/vpc0-- node 10.0.2.3
#  node: 10.0.9.1, 10.0.9.2, 10.0.9.3 on lo (etcd members); gw, gwb and gwc
#        route 10.0.9.0/24 to node
#
# With --wanemu (or WANEMU=1) the wan link goes through a sixth namespace,
# PREFIX-wan, where tools/wanemu forwards frames between its interfaces "a"
# (peer of vm's wan0) and "b" (peer of gw's wan0), adding delay and loss:
#
#  vm 198.51.100.1 wan0 --- a [PREFIX-wan: wanemu] b --- wan0 gw 198.51.100.2
#
# Addresses and names seen by vm and gw are the same as without it. The
# endpoints' wan0 get gso_max_segs 1 so no super-packet reaches the emulator
# (its loss draw is per wire-sized frame). `up --wanemu` starts the emulator
# with no delay and no loss; `wanemu PREFIX DELAY_MS LOSS_PCT [SEED]` restarts
# it with DELAY_MS of one-way delay (the round trip gets twice that) and
# LOSS_PCT percent of frames dropped in each direction independently; a
# SEED deals the same loss draws, frame by frame, every time it is given.
# Its PID, log, counters and blackhole file live in $TOPO_RUN_DIR
# (/run/gtun-topology); it is stopped by that PID, never by name.
# WANEMU_BIN names the binary (default: bin/wanemu, built when missing or
# older than tools/wanemu/*.go).
set -euo pipefail

usage() {
	echo "usage: $0 up [PREFIX] [--wanemu] [--cluster2] [--ipv6] [--replicas] | down|status [PREFIX] | wanemu PREFIX DELAY_MS LOSS_PCT [SEED] | wanemu-stats PREFIX | blackhole PREFIX on|off" >&2
	exit 2
}

[ $# -ge 1 ] || usage
CMD=$1
shift
WANEMU=${WANEMU:-0}
CLUSTER2=${CLUSTER2:-0}
IPV6=${IPV6:-0}
REPLICAS=${REPLICAS:-0}
ARGS=()
for a in "$@"; do
	case $a in
	--wanemu) WANEMU=1 ;;
	--cluster2) CLUSTER2=1 ;;
	--ipv6) IPV6=1 ;;
	--replicas) REPLICAS=1 ;;
	*) ARGS+=("$a") ;;
	esac
done
PREFIX=${ARGS[0]:-gt}
if ! [[ $PREFIX =~ ^[A-Za-z0-9][A-Za-z0-9_-]{0,30}$ ]]; then
	echo "topology.sh: bad prefix '$PREFIX' (letters, digits, - and _, at most 31)" >&2
	exit 2
fi
case $WANEMU in 0 | 1) ;; *)
	echo "topology.sh: WANEMU must be 0 or 1" >&2
	exit 2
	;;
esac
case $REPLICAS in 0 | 1) ;; *)
	echo "topology.sh: REPLICAS must be 0 or 1" >&2
	exit 2
	;;
esac
case $CLUSTER2 in 0 | 1) ;; *)
	echo "topology.sh: CLUSTER2 must be 0 or 1" >&2
	exit 2
	;;
esac
case $IPV6 in 0 | 1) ;; *)
	echo "topology.sh: IPV6 must be 0 or 1" >&2
	exit 2
	;;
esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOPO_RUN_DIR=${TOPO_RUN_DIR:-/run/gtun-topology}

HOSTS=(vm vm2 gw node pod)
[ "$WANEMU" = 1 ] && HOSTS+=(wan)
[ "$CLUSTER2" = 1 ] && HOSTS+=(gw2 node2 pod2)
[ "$REPLICAS" = 1 ] && HOSTS+=(gwb gwc)
ALL_HOSTS=(vm vm2 gw node pod wan gw2 node2 pod2 gwb gwc) # down and status: whatever exists
ns() { echo "$PREFIX-$1"; }
VM=$(ns vm) VM2=$(ns vm2) GW=$(ns gw) NODE=$(ns node) POD=$(ns pod) WAN=$(ns wan)
GW2=$(ns gw2) NODE2=$(ns node2) POD2=$(ns pod2)
EMU_PID=$TOPO_RUN_DIR/$PREFIX-wanemu.pid
EMU_LOG=$TOPO_RUN_DIR/$PREFIX-wanemu.log
EMU_STATS=$TOPO_RUN_DIR/$PREFIX-wanemu.stats.json
EMU_BLACKHOLE=$TOPO_RUN_DIR/$PREFIX-wan.blackhole

ns_exists() { [ -e "/run/netns/$1" ]; }

# Kill processes that live inside our namespaces (they can only be ours),
# then delete the namespaces; deleting a namespace removes its veths.
down() {
	local h n pids
	wanemu_stop
	rm -f "$EMU_LOG" "$EMU_STATS" "$EMU_BLACKHOLE"
	for h in "${ALL_HOSTS[@]}"; do
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
		for h in "${ALL_HOSTS[@]}"; do
			n=$(ns "$h")
			ns_exists "$n" || continue
			left+=$(ip netns pids "$n" 2>/dev/null || true)
		done
		[ -z "$left" ] && break
		sleep 0.1
	done
	for h in "${ALL_HOSTS[@]}"; do
		n=$(ns "$h")
		ns_exists "$n" || continue
		pids=$(ip netns pids "$n" 2>/dev/null || true)
		# shellcheck disable=SC2086 # one PID per word
		if [ -n "$pids" ]; then kill -KILL $pids 2>/dev/null || true; fi
		ip netns del "$n" 2>/dev/null || true
	done
	# the namespace files go away asynchronously in rare cases; check
	for h in "${ALL_HOSTS[@]}"; do
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
		if [ "$IPV6" = 1 ]; then
			# IPv6 without DAD (usable at once) or router advertisements
			local c
			for c in all default; do
				sysctl_ns "$n" net.ipv6.conf.$c.disable_ipv6=0
				sysctl_ns "$n" net.ipv6.conf.$c.accept_dad=0
				sysctl_ns "$n" net.ipv6.conf.$c.accept_ra=0
				sysctl_ns "$n" net.ipv6.conf.$c.router_solicitations=0
			done
		else
			# no IPv6 noise (DAD, router solicitations) on the test links
			sysctl_ns "$n" net.ipv6.conf.all.disable_ipv6=1 2>/dev/null || true
			sysctl_ns "$n" net.ipv6.conf.default.disable_ipv6=1 2>/dev/null || true
		fi
	done

	# veth pairs, created inside the namespaces: name in A, peer name in B
	if [ "$WANEMU" = 1 ]; then
		# vm.wan0 -- a [wan: wanemu] b -- gw.wan0; the endpoints segment
		# everything themselves (no GSO super-packets on the emulated link)
		ip -n "$VM" link add wan0 mtu 1500 type veth peer name a mtu 1500 netns "$WAN"
		ip -n "$GW" link add wan0 mtu 1500 type veth peer name b mtu 1500 netns "$WAN"
		ip -n "$VM" link set wan0 gso_max_segs 1
		ip -n "$GW" link set wan0 gso_max_segs 1
		ip -n "$WAN" link set dev a up
		ip -n "$WAN" link set dev b up
	else
		ip -n "$VM" link add wan0 mtu 1500 type veth peer name wan0 mtu 1500 netns "$GW"
	fi
	ip -n "$VM"   link add lan0 mtu 1500 type veth peer name lan0 mtu 1500 netns "$VM2"

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
	ip -n "$GW" link set wan0 up
	if [ "$IPV6" = 1 ]; then
		ip -n "$VM" addr add 2001:db8:100::1/64 dev wan0 nodad
		ip -n "$VM" addr add fd00:172:16::1/64 dev lan0 nodad
		ip -n "$VM2" addr add fd00:172:16::2/64 dev lan0 nodad
		ip -n "$VM2" route add default via fd00:172:16::1
		ip -n "$GW" addr add 2001:db8:100::2/64 dev wan0 nodad
	fi
	cluster "$GW" "$NODE" "$POD"
	# only for the direct-routing baseline in bench.sh; tunnel traffic is
	# masqueraded by gtund, so no route to the tunnel pool here on purpose
	ip -n "$NODE" route add 198.51.100.0/24 via 10.0.0.2

	if [ "$CLUSTER2" = 1 ]; then
		cluster2
	fi
	if [ "$REPLICAS" = 1 ]; then
		replicas
	fi

	wait_links_up
	if [ "$WANEMU" = 1 ]; then
		wanemu_start 0 0
	fi
	trap - ERR
}

# cluster2: a second cluster behind gw2, addressed exactly like the first
# (gw 10.0.0.2, node 10.0.0.3, pods 10.244.1.0/24, ClusterIP 10.96.0.10), so
# the two overlap; only gw2's wan address (198.51.100.3) tells them apart.
# vm reaches it over its own veth, wan2, without an address of its own there:
# a /32 route sends 198.51.100.3 out of wan2 with source 198.51.100.1, and vm
# answers gw2's ARP for 198.51.100.1 on wan2 (arp_ignore 0 answers for any
# local address), so the first cluster's wan link stays exactly as it is.
cluster2() {
	ip -n "$VM" link add wan2 mtu 1500 type veth peer name wan0 mtu 1500 netns "$GW2"
	ip -n "$VM" link set wan2 up
	ip -n "$VM" route add 198.51.100.3/32 dev wan2 src 198.51.100.1
	ip -n "$GW2" addr add 198.51.100.3/24 dev wan0
	ip -n "$GW2" link set wan0 up
	cluster "$GW2" "$NODE2" "$POD2"
}

# replicas: gwb and gwc, two more gateways of the first cluster (see the
# header), and the etcd members' addresses on node.
replicas() {
	local h i wan vpc
	for i in 1 2 3; do ip -n "$NODE" addr add "10.0.9.$i/32" dev lo; done
	ip -n "$GW" route add 10.0.9.0/24 via 10.0.0.3
	for h in b c; do
		case $h in b) wan=4 vpc=1 ;; c) wan=5 vpc=2 ;; esac
		local g
		g=$(ns "gw$h")
		ip -n "$VM" link add "wan$h" mtu 1500 type veth peer name wan0 mtu 1500 netns "$g"
		ip -n "$VM" link set "wan$h" up
		ip -n "$VM" route add "198.51.100.$wan/32" dev "wan$h" src 198.51.100.1
		ip -n "$g" addr add "198.51.100.$wan/24" dev wan0
		ip -n "$g" link set wan0 up
		ip -n "$g" link add vpc0 mtu 1500 type veth peer name "vpc$h" mtu 1500 netns "$NODE"
		ip -n "$g" addr add "10.0.$vpc.2/24" dev vpc0
		ip -n "$g" link set vpc0 up
		ip -n "$NODE" addr add "10.0.$vpc.3/24" dev "vpc$h"
		ip -n "$NODE" link set "vpc$h" up
		ip -n "$g" route add 10.244.0.0/16 via "10.0.$vpc.3"
		ip -n "$g" route add 10.96.0.0/12 via "10.0.$vpc.3"
		ip -n "$g" route add 10.0.9.0/24 via "10.0.$vpc.3"
		sysctl_ns "$g" net.ipv4.ip_forward=1
	done
}

# cluster GW NODE POD: a cluster's side of the topology, the same addresses
# for every cluster: gw's leg in the VPC (10.0.0.2, forwarding, routes to
# the pod and service CIDRs via the node), a k8s node (10.0.0.3) with one
# pod (10.244.1.20) and a kube-proxy-like ClusterIP DNAT (10.96.0.10:80 to
# the pod's 8080, :53 to its 53 for the split-DNS tests).
cluster() {
	local gw=$1 node=$2 pod=$3
	ip -n "$gw" link add vpc0 mtu 1500 type veth peer name vpc0 mtu 1500 netns "$node"
	ip -n "$node" link add pod0 mtu 1500 type veth peer name eth0 mtu 1500 netns "$pod"

	ip -n "$gw" addr add 10.0.0.2/24 dev vpc0
	ip -n "$gw" link set vpc0 up
	ip -n "$gw" route add 10.244.0.0/16 via 10.0.0.3
	ip -n "$gw" route add 10.96.0.0/12 via 10.0.0.3
	sysctl_ns "$gw" net.ipv4.ip_forward=1

	ip -n "$node" addr add 10.0.0.3/24 dev vpc0
	ip -n "$node" addr add 10.244.1.1/24 dev pod0
	ip -n "$node" link set vpc0 up
	ip -n "$node" link set pod0 up
	# Locally generated connections need a route to the service CIDR before
	# the nat output hook can DNAT them (on a real node the default route
	# serves). Not-DNATed service traffic goes nowhere: ARP on pod0 fails.
	ip -n "$node" route add 10.96.0.0/12 dev pod0
	sysctl_ns "$node" net.ipv4.ip_forward=1
	ip netns exec "$node" nft -f - <<'NFT'
table ip kubeproxy {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr 10.96.0.10 tcp dport 80 dnat to 10.244.1.20:8080
		ip daddr 10.96.0.10 udp dport 53 dnat to 10.244.1.20:53
		ip daddr 10.96.0.10 tcp dport 53 dnat to 10.244.1.20:53
	}
	chain output {
		type nat hook output priority -100; policy accept;
		ip daddr 10.96.0.10 tcp dport 80 dnat to 10.244.1.20:8080
		ip daddr 10.96.0.10 udp dport 53 dnat to 10.244.1.20:53
		ip daddr 10.96.0.10 tcp dport 53 dnat to 10.244.1.20:53
	}
}
NFT

	ip -n "$pod" addr add 10.244.1.20/24 dev eth0
	ip -n "$pod" link set eth0 up
	ip -n "$pod" route add default via 10.244.1.1
	if [ "$IPV6" = 1 ]; then
		cluster6 "$gw" "$node" "$pod"
	fi
}

# cluster6 GW NODE POD: the cluster's IPv6 side (dual-stack: pod CIDR
# fd00:10:244::/56, Service CIDR fd00:10:96::/112, the same kube-proxy-like
# DNAT as for IPv4).
cluster6() {
	local gw=$1 node=$2 pod=$3
	ip -n "$gw" addr add fd00:10::2/64 dev vpc0 nodad
	ip -n "$gw" route add fd00:10:244::/56 via fd00:10::3
	ip -n "$gw" route add fd00:10:96::/112 via fd00:10::3
	sysctl_ns "$gw" net.ipv6.conf.all.forwarding=1
	ip -n "$node" addr add fd00:10::3/64 dev vpc0 nodad
	ip -n "$node" addr add fd00:10:244:1::1/64 dev pod0 nodad
	ip -n "$node" route add fd00:10:96::/112 dev pod0
	sysctl_ns "$node" net.ipv6.conf.all.forwarding=1
	ip netns exec "$node" nft -f - <<'NFT'
table ip6 kubeproxy {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		ip6 daddr fd00:10:96::10 tcp dport 80 dnat to [fd00:10:244:1::20]:8080
		ip6 daddr fd00:10:96::10 udp dport 53 dnat to [fd00:10:244:1::20]:53
		ip6 daddr fd00:10:96::10 tcp dport 53 dnat to [fd00:10:244:1::20]:53
	}
	chain output {
		type nat hook output priority -100; policy accept;
		ip6 daddr fd00:10:96::10 tcp dport 80 dnat to [fd00:10:244:1::20]:8080
		ip6 daddr fd00:10:96::10 udp dport 53 dnat to [fd00:10:244:1::20]:53
		ip6 daddr fd00:10:96::10 tcp dport 53 dnat to [fd00:10:244:1::20]:53
	}
}
NFT
	ip -n "$pod" addr add fd00:10:244:1::20/64 dev eth0 nodad
	ip -n "$pod" route add default via fd00:10:244:1::1
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

# wanemu_pid: the running emulator's PID from its pid file, only if that
# process still lives in our wan namespace (so a stale file never makes us
# signal someone else).
wanemu_pid() {
	local pid
	[ -s "$EMU_PID" ] || return 1
	pid=$(cat "$EMU_PID" 2>/dev/null) || return 1
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	[ -e "/proc/$pid" ] || return 1
	[ "$(ip netns identify "$pid" 2>/dev/null)" = "$WAN" ] || return 1
	echo "$pid"
}

# wanemu_stop: SIGTERM the emulator (it prints its counters to its log and
# exits), SIGKILL after 3 s.
wanemu_stop() {
	local pid _
	if pid=$(wanemu_pid); then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 30); do
			[ -e "/proc/$pid" ] || break
			sleep 0.1
		done
		if [ -e "/proc/$pid" ]; then
			echo "topology.sh: wanemu (pid $pid) still running 3 s after SIGTERM: SIGKILL" >&2
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	rm -f "$EMU_PID"
}

wanemu_bin() {
	if [ -n "${WANEMU_BIN:-}" ]; then
		[ -x "$WANEMU_BIN" ] || {
			echo "topology.sh: WANEMU_BIN=$WANEMU_BIN is not executable" >&2
			return 1
		}
		echo "$WANEMU_BIN"
		return 0
	fi
	local bin=$ROOT/bin/wanemu
	if [ ! -x "$bin" ] || [ -n "$(find "$ROOT/tools/wanemu" -name '*.go' -newer "$bin" 2>/dev/null)" ]; then
		(cd "$ROOT" && CGO_ENABLED=0 go build -o "$bin" ./tools/wanemu) >&2 || {
			echo "topology.sh: cannot build tools/wanemu" >&2
			return 1
		}
	fi
	echo "$bin"
}

# wanemu_start DELAY_MS LOSS_PCT [SEED]: (re)start the emulator in the wan
# namespace; returns once it forwards (its pid file appears).
wanemu_start() {
	local delay=$1 loss=$2 seed=${3:-0} bin pid _
	if ! [[ $delay =~ ^[0-9]+(\.[0-9]+)?$ ]] || ! [[ $loss =~ ^[0-9]+(\.[0-9]+)?$ ]]; then
		echo "topology.sh: wanemu: DELAY_MS and LOSS_PCT must be non-negative numbers, not '$delay' '$loss'" >&2
		return 2
	fi
	if ! [[ $seed =~ ^[0-9]{1,18}$ ]]; then
		echo "topology.sh: wanemu: SEED must be an integer of up to 18 digits (0: a random one), not '$seed'" >&2
		return 2
	fi
	bin=$(wanemu_bin)
	mkdir -p "$TOPO_RUN_DIR"
	wanemu_stop
	# setsid: not in the caller's session; the log keeps its output (and
	# the caller's pipes close when this script exits)
	setsid ip netns exec "$WAN" "$bin" -a a -b b -delay "${delay}ms" -loss "$loss" -seed "$seed" \
		-blackhole-file "$EMU_BLACKHOLE" -stats-file "$EMU_STATS" -pidfile "$EMU_PID" \
		>>"$EMU_LOG" 2>&1 </dev/null &
	for _ in $(seq 100); do
		if pid=$(wanemu_pid); then
			return 0
		fi
		sleep 0.05
	done
	echo "topology.sh: wanemu did not start in $WAN; last lines of $EMU_LOG:" >&2
	tail -n 20 "$EMU_LOG" >&2 || true
	return 1
}

# wanemu_stats: ask the emulator for its counters (SIGUSR1) and print them.
wanemu_stats() {
	local pid _
	pid=$(wanemu_pid) || {
		echo "topology.sh: no wanemu running in $WAN" >&2
		return 1
	}
	rm -f "$EMU_STATS"
	kill -USR1 "$pid"
	for _ in $(seq 100); do
		if [ -s "$EMU_STATS" ]; then
			cat "$EMU_STATS"
			return 0
		fi
		sleep 0.02
	done
	echo "topology.sh: wanemu (pid $pid) wrote no counters to $EMU_STATS" >&2
	return 1
}

status() {
	local h n
	for h in "${ALL_HOSTS[@]}"; do
		n=$(ns "$h")
		if ns_exists "$n"; then
			echo "== $n"
			ip -n "$n" -br addr
			ip -n "$n" route
		elif [ "$h" != wan ] && [[ $h != *2 || $h == vm2 ]]; then
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
wanemu)
	[ ${#ARGS[@]} = 3 ] || [ ${#ARGS[@]} = 4 ] || usage
	ns_exists "$WAN" || {
		echo "topology.sh: no namespace $WAN (build the topology with: up $PREFIX --wanemu)" >&2
		exit 1
	}
	wanemu_start "${ARGS[1]}" "${ARGS[2]}" "${ARGS[3]:-0}"
	;;
wanemu-stats)
	[ ${#ARGS[@]} = 1 ] || usage
	wanemu_stats
	;;
blackhole)
	[ ${#ARGS[@]} = 2 ] || usage
	case ${ARGS[1]} in
	on) mkdir -p "$TOPO_RUN_DIR" && : >"$EMU_BLACKHOLE" ;;
	off) rm -f "$EMU_BLACKHOLE" ;;
	*) usage ;;
	esac
	sleep 0.03 # the emulator polls the file every 10 ms
	;;
*) usage ;;
esac
