#!/usr/bin/env bash
# Throughput / latency / packet-rate / CPU / memory report (make bench).
# One run measures direct routing and the tunnel on the same topology:
#
#   direct: vm routes 10.244.0.0/16 via gw's wan address (no tunnel)
#   tunnel: gtund in gw, gtun in vm, routes pushed to gtun0
#
# iperf3 TCP vm->pod and pod->vm (-R), 1 and 4 streams; ping RTT (and again
# with the pinger and daemons pinned to CPU 0, see ping_one_cpu); UDP 64-byte
# received packet rate both ways; CPU seconds per GB and peak RSS of gtun and
# gtund. Prints a table and writes bench/results/<timestamp>.json.
# Direct and tunnel take turns ROUNDS times (default 3); the report gives
# medians and each ratio's range over the rounds. The tunnel runs once per
# transport of TRANSPORTS (default "tcp udp"; TRANSPORT=X alone means
# TRANSPORTS=X) in every round, right after the direct runs, and the report
# sets the transports side by side (Mbit/s and CPU per GB of each test).
# The first transport's files are in the raw directory itself, the others'
# in clean-TRANSPORT/ (with a copy of the direct runs).
# It only reports: there are no thresholds. Exits non-zero only when the
# setup or a measurement failed outright.
#
# Both sections run on the plain topology (vm and gw joined by one veth, no
# emulator in the path), so the headline ratio compares with earlier runs.
#
# Then (LOSSY=1, the default; LOSSY=0 skips it) the lossy-link section
# rebuilds the topology with the WAN emulator (tools/wanemu, see
# scripts/topology.sh --wanemu) between vm and gw and, for each condition
# of LOSSY_CONDITIONS (one-way delay ms : loss % each way; default
# 0 ms 0%, 25 ms 1%, 25 ms 5%: RTT +0, +50, +50 ms), measures single-stream
# TCP vm->pod for LOSSY_DURATION s (default 10) and the idle ping RTT:
# direct (no tunnel), through the tunnel with transport tcp, udp, and kcp,
# taking turns LOSSY_ROUNDS times (default 3; the report gives medians: one
# flow through the emulator moves by a third from one run to the next; and
# udp's ratio to no tunnel with the lowest and highest of one round's; and,
# from the emulator's counters before and after each flow, the loss each
# kind of flow was dealt and the frames dropped for a full queue under it).
# The emulator restarts before each flow with its round's seed (LOSSY_SEED
# plus the round's number over the section; LOSSY_SEED defaults to a random
# one, and the report's meta keeps it): every flow of a round is dealt the
# same sequence of loss draws, so the transports and no tunnel are compared
# on the same luck, and the rounds sample the loss.
# gtund listens with all three; gtun is restarted for each. If gtund
# refuses kcp, the kcp column says n/a. The TCP congestion control of the
# namespaces (the outer TCP of transport tcp, and the measured TCP itself) is
# set per pass: LOSSY_CCS (default "cubic bbr") runs the whole section once
# per congestion control. cubic is the Linux default and what a stock VM
# runs; this machine's kernel defaults to bbr, which shrugs off random loss
# by design, so the report shows both. A namespace may only use a congestion
# control listed in the root namespace's
# net.ipv4.tcp_allowed_congestion_control: bench adds a missing one there for
# the run and puts the old list back on exit. LOSSY_CC=X is LOSSY_CCS=X.
# A third tunnel column, kcp+fec, runs kcp with forward error correction
# LOSSY_FEC (DATA:PARITY, default 10:3; empty skips it), gtund restarted
# with the same setting for it.
#
#   scripts/bench.sh                 (root; bin/gtun, bin/gtund from make build)
#   DURATION=10 TRANSPORTS="tcp udp kcp" scripts/bench.sh
#   LOSSY=0 scripts/bench.sh         (no lossy-link section)
#   ROUNDS=1 DURATION=2 LOSSY=0 scripts/bench.sh   (a quick look)
#
# WIREGUARD_GO=PATH adds wireguard-go (a binary built from its own
# repository; gtun does not ship or build it) to the clean section, as one
# more column after the transports: wireguard-go in vm and in gw on the same
# wan link, with its offloads (TSO from its TUN, UDP GSO and GRO), gtun's
# tunnel MTU (1400; see LINK_MTU), the cluster CIDR routed through it and gw
# masquerading what comes out of it into the cluster, as gtund does. Its two
# processes are measured as gtun and gtund are (the report names them its
# client and server). Needs wg (wireguard-tools).
#
# LINK_MTU=N (default 1500) sets every link of the plain topology (the wan,
# gw to node, node to the pod) to N bytes, and the tunnel MTU to N - 100
# (1400 on the default links): LINK_MTU=9000 is a path of jumbo frames,
# where the udp transport sends a datagram per 8.9 KB instead of 1.4 KB.
# The lossy section keeps 1500 (the emulator forwards up to 1500 bytes).
set -euo pipefail
TRANSPORTS=${TRANSPORTS:-${TRANSPORT:-tcp udp}}
TRANSPORT=${TRANSPORTS%% *}
PREFIX=${PREFIX:-bench}
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
LOSSY=${LOSSY:-1}
LOSSY_DURATION=${LOSSY_DURATION:-10}
LOSSY_ROUNDS=${LOSSY_ROUNDS:-3}
LOSSY_SEED=${LOSSY_SEED:-$(((RANDOM << 15 | RANDOM) + 1))}
lossy_seq=0 # rounds of the lossy section so far, over its passes: each takes seed LOSSY_SEED + lossy_seq
LOSSY_CONDITIONS=${LOSSY_CONDITIONS:-0:0 25:1 25:5}
LOSSY_CCS=${LOSSY_CC:-${LOSSY_CCS:-cubic bbr}}
LOSSY_FEC=${LOSSY_FEC-10:3}
LINK_MTU=${LINK_MTU:-1500}
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

lib_init
RAW=$D/raw
RAWT=$RAW # where the tunnel runs of the transport being measured go
mkdir -p "$RAW"
TS=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$LIB_ROOT/bench/results/$TS.json}
META=$RAW/meta.env
FAILED=0
for tr in $TRANSPORTS; do
	case $tr in tcp | udp | kcp) ;; *) die "TRANSPORTS: unknown transport '$tr' (tcp, udp, kcp)" ;; esac
done
WIREGUARD_GO=${WIREGUARD_GO:-}
if [ -n "$WIREGUARD_GO" ]; then
	[ -x "$WIREGUARD_GO" ] || die "WIREGUARD_GO: '$WIREGUARD_GO' is not an executable file"
	command -v wg >/dev/null || die "WIREGUARD_GO needs the wg command (Debian: apt-get install wireguard-tools)"
	TRANSPORTS="$TRANSPORTS wireguard-go"
fi

meta() { echo "$1=$2" >>"$META"; }
fail_step() {
	echo "  measurement failed: $1: $2" >&2
	meta "err.$1" "$2"
	FAILED=1
}

{
	echo "timestamp=$TS"
	echo "transport=$TRANSPORT"
	echo "kernel=$(uname -r)"
	echo "commit=$(git -C "$LIB_ROOT" rev-parse --short HEAD 2>/dev/null || echo none)"
	echo "duration_s=$DURATION"
	echo "rounds=$ROUNDS"
	echo "clk_tck=$(getconf CLK_TCK)"
	echo "cpus=$(nproc)"
	echo "topology=plain (no WAN emulator in the path)$([ "$LINK_MTU" = 1500 ] || echo ", links of $LINK_MTU bytes, tunnel mtu $((LINK_MTU - 100))")"
} >"$META"
for tr in ${TRANSPORTS#"$TRANSPORT"}; do
	mkdir -p "$RAW/clean-$tr"
	sed "s/^transport=.*/transport=$tr/" "$META" >"$RAW/clean-$tr/meta.env"
done
case $LOSSY in 0 | 1) ;; *) die "LOSSY must be 0 or 1" ;; esac
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive number (got '$ROUNDS')"
[[ $LINK_MTU =~ ^[0-9]+$ ]] && [ "$LINK_MTU" -ge 1500 ] && [ "$LINK_MTU" -le 9284 ] ||
	die "LINK_MTU must be 1500..9284 (got '$LINK_MTU'): the tunnel MTU is 100 less, at most 9184 with udp"
[[ $LOSSY_ROUNDS =~ ^[1-9][0-9]*$ ]] || die "LOSSY_ROUNDS must be a positive number (got '$LOSSY_ROUNDS')"
[[ $LOSSY_SEED =~ ^[1-9][0-9]{0,11}$ ]] || die "LOSSY_SEED must be a positive number of up to 12 digits (got '$LOSSY_SEED')"
for c in $LOSSY_CONDITIONS; do
	[[ $c =~ ^[0-9]+(\.[0-9]+)?:[0-9]+(\.[0-9]+)?$ ]] || die "LOSSY_CONDITIONS: bad condition '$c' (want DELAY_MS:LOSS_PCT, e.g. 25:1)"
done

[ -z "$LOSSY_FEC" ] || [[ $LOSSY_FEC =~ ^[0-9]+:[0-9]+$ ]] || die "LOSSY_FEC: want DATA:PARITY, e.g. 10:3 (got '$LOSSY_FEC')"
for c in $LOSSY_CCS; do
	[[ $c =~ ^[a-z0-9_]+$ ]] || die "LOSSY_CCS: bad congestion control name '$c'"
done

hdr "setup: report tool, dependencies, topology (prefix $PREFIX), keys, configs"
(cd "$LIB_ROOT" && go build -o "$D/benchreport" ./tools/benchreport) || die "cannot build tools/benchreport"
lib_topology_up
MTU=$((LINK_MTU - 100)) # lib_write_configs: gtund's mtu
if [ "$LINK_MTU" != 1500 ]; then
	for link in vm:wan0 gw:wan0 gw:vpc0 node:vpc0 node:pod0 pod:eth0; do
		ip -n "$PREFIX-${link%%:*}" link set "${link#*:}" mtu "$LINK_MTU"
	done
fi
lib_keys
lib_write_configs
start_iperf_server() {
	local i
	lib_start iperf3 pod iperf3 -s -B "$POD_IP"
	for ((i = 0; i < 50; i++)); do
		inns pod ss -Hltn "sport = :5201" | grep -q 5201 && return 0
		sleep 0.1
	done
	die "iperf3 server did not start"
}
start_iperf_server

# cpu_snapshot: "gtun_ticks gtund_ticks" (empty in direct mode)
cpu_snapshot() {
	[ "$MODE" = tunnel ] || return 0
	echo "$(lib_cpu_ticks "${PIDS[gtun]}") $(lib_cpu_ticks "${PIDS[gtund]}")"
}

# iperf TEST ARGS...: one iperf3 run from vm to the pod, JSON to $RAW/$MODE-TEST.json
iperf() {
	local test=$1 before after rc=0 err
	shift
	local f="$RAWT/$MODE-$test$SUFFIX.json" t=${IPERF_DURATION:-$DURATION}
	printf '  %-12s %-7s iperf3 %s ... ' "$test" "$MODE" "$*"
	before=$(cpu_snapshot)
	timeout $((t + 30)) ip netns exec "$PREFIX-vm" \
		iperf3 -c "$POD_IP" -t "$t" -J --connect-timeout 3000 "$@" >"$f" 2>"$f.err" || rc=$?
	after=$(cpu_snapshot)
	if [ $rc -ne 0 ]; then
		err=$(grep -o '"error":[^}]*' "$f" 2>/dev/null | head -1 || true)
		[ $rc = 124 ] && err="timed out after $((t + 30))s"
		echo "FAILED"
		fail_step "$MODE-$test$SUFFIX" "iperf3 exit $rc ${err:-$(head -c 300 "$f.err")}"
		rm -f "$f"
	else
		echo "ok"
		[ -s "$f.err" ] || rm -f "$f.err"
		if [ "$MODE" = tunnel ] && [ -n "$after" ]; then
			read -r b1 b2 <<<"$before"
			read -r a1 a2 <<<"$after"
			meta "cpu.$test$SUFFIX.gtun" $((a1 - b1))
			meta "cpu.$test$SUFFIX.gtund" $((a2 - b2))
		fi
	fi
	sleep 1 # let queues drain between runs
}

# ping_step NAME [WRAPPER...]: 20 pings vm->pod at 20/s, run under WRAPPER
# (e.g. taskset), to $RAW/$MODE-NAME$SUFFIX.txt; every reply is expected.
ping_step() {
	local name=$1 f="$RAWT/$MODE-$1$SUFFIX.txt"
	shift
	printf '  %-12s %-7s %s ... ' "$name" "$MODE" "${*:+$* }ping -c 20 -i 0.05 -q"
	if ip netns exec "$PREFIX-vm" "$@" ping -c 20 -i 0.05 -q -W 2 "$POD_IP" >"$f" 2>&1; then
		echo "ok ($(grep -o 'rtt.*' "$f"))"
	else
		echo "FAILED"
		fail_step "$MODE-$name$SUFFIX" "$(tail -n 2 "$f" | tr '\n' ' ')"
	fi
}

# ping_one_cpu: the same ping with the pinger and, in tunnel mode, every
# thread of both daemons on CPU 0; their affinity is put back afterwards.
# A diagnostic beside the headline RTT: on this kind of VM an idle vCPU
# sleeps in HLT (no cpuidle driver), and a hop that wakes a thread on the
# other, idle vCPU waits for its wake-up, which costs more than gtun's own
# work. On one CPU no hop waits for that.
ping_one_cpu() {
	local name pid cpus=()
	if [ "$MODE" = tunnel ]; then
		for name in gtun gtund; do
			pid=${PIDS[$name]}
			cpus+=("$(taskset -p -c "$pid" | sed 's/.*: //')")
			taskset -a -p -c 0 "$pid" >/dev/null
		done
	fi
	ping_step ping-1cpu taskset -c 0
	if [ "$MODE" = tunnel ]; then
		taskset -a -p -c "${cpus[0]}" "${PIDS[gtun]}" >/dev/null
		taskset -a -p -c "${cpus[1]}" "${PIDS[gtund]}" >/dev/null
	fi
}

# wireguard_go_up: wireguard-go in vm (client) and gw (server) as PIDS[gtun]
# and PIDS[gtund], so that the measurements, the CPU and memory figures and
# the stop are theirs; stopping them removes their interfaces, and with them
# the route. The masquerade table goes with the namespaces.
WG_CLIENT_KEY="" WG_SERVER_KEY=""
wireguard_go_up() {
	local c=$PREFIX-wgc s=$PREFIX-wgs i
	if [ -z "$WG_CLIENT_KEY" ]; then
		WG_CLIENT_KEY=$(wg genkey) WG_SERVER_KEY=$(wg genkey)
		inns gw nft -f - <<-EOF
			table ip wgbench {
				chain postrouting {
					type nat hook postrouting priority srcnat; policy accept;
					iifname "$s" masquerade
				}
			}
		EOF
	fi
	lib_start gtund gw env WG_PROCESS_FOREGROUND=1 "$WIREGUARD_GO" -f "$s"
	lib_start gtun vm env WG_PROCESS_FOREGROUND=1 "$WIREGUARD_GO" -f "$c"
	for ((i = 0; i < 100; i++)); do
		[ -S "/var/run/wireguard/$s.sock" ] && [ -S "/var/run/wireguard/$c.sock" ] && break
		sleep 0.1
	done
	inns gw wg set "$s" private-key <(echo "$WG_SERVER_KEY") listen-port 51820 \
		peer "$(wg pubkey <<<"$WG_CLIENT_KEY")" allowed-ips 100.64.250.1/32 ||
		die "wireguard-go did not take its configuration (log: $D/gtund.log)"
	inns vm wg set "$c" private-key <(echo "$WG_CLIENT_KEY") \
		peer "$(wg pubkey <<<"$WG_SERVER_KEY")" endpoint "$GW_WAN:51820" allowed-ips 10.244.0.0/16 ||
		die "wireguard-go did not take its configuration (log: $D/gtun.log)"
	ip -n "$PREFIX-gw" addr add 100.64.250.2/30 dev "$s"
	ip -n "$PREFIX-gw" link set "$s" mtu "$MTU" up
	ip -n "$PREFIX-vm" addr add 100.64.250.1/30 dev "$c"
	ip -n "$PREFIX-vm" link set "$c" mtu "$MTU" up
	ip -n "$PREFIX-vm" route add 10.244.0.0/16 dev "$c"
	for ((i = 0; i < 50; i++)); do
		inns vm ping -c 1 -W 1 "$POD_IP" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	die "no ping to $POD_IP through wireguard-go"
}

measure() {
	ping_step ping
	ping_one_cpu
	iperf tcp-up-1
	iperf tcp-down-1 -R
	iperf tcp-up-4 -P 4
	iperf tcp-down-4 -P 4 -R
	iperf udp64-up -u -l 64 -b 0
	iperf udp64-down -u -l 64 -b 0 -R
}

# Direct routing and the tunnel take turns, ROUNDS times: load from
# elsewhere on a shared machine comes and goes over minutes, and measuring
# all of one before all of the other would charge it to one side. The
# report gives the median of the rounds and the lowest and highest ratio.
for ((round = 1; round <= ROUNDS; round++)); do
	SUFFIX=""
	[ "$round" -eq 1 ] || SUFFIX=".r$round"

	hdr "round $round/$ROUNDS: direct routing (no tunnel, plain topology): vm -> 198.51.100.2 -> node -> pod"
	MODE=direct
	ip -n "$PREFIX-vm" route add 10.244.0.0/16 via "$GW_WAN"
	measure
	ip -n "$PREFIX-vm" route del 10.244.0.0/16 via "$GW_WAN"

	for TRANSPORT in $TRANSPORTS; do
		hdr "round $round/$ROUNDS: tunnel (plain topology): gtund in $PREFIX-gw, gtun in $PREFIX-vm, transport $TRANSPORT"
		MODE=tunnel
		RAWT=$RAW META=$RAW/meta.env
		if [ "$TRANSPORT" != "${TRANSPORTS%% *}" ]; then
			RAWT=$RAW/clean-$TRANSPORT META=$RAW/clean-$TRANSPORT/meta.env
		fi
		if [ "$TRANSPORT" = wireguard-go ]; then
			wireguard_go_up
		else
			lib_write_configs >/dev/null
			lib_start_daemons
			lib_wait_route 15
			ip -n "$PREFIX-vm" route get "$POD_IP" | grep -q 'dev gtun0' || die "traffic to $POD_IP would not use gtun0"
		fi
		for name in gtun gtund; do
			note "$name pid ${PIDS[$name]} comm $(cat "/proc/${PIDS[$name]}/comm")"
		done
		measure
		for name in gtun gtund; do
			if lib_alive "${PIDS[$name]}"; then
				meta "rss$SUFFIX.${name}_kb" "$(lib_hwm_kb "${PIDS[$name]}")"
			else
				fail_step "$name$SUFFIX" "exited during the measurements"
			fi
		done
		for name in gtun gtund; do
			lib_stop "$name" 10
			[ "$STOP_RC" -eq 0 ] || fail_step "$name-stop$SUFFIX" "exit status $STOP_RC after SIGTERM (want 0)"
		done
		RAWT=$RAW META=$RAW/meta.env
	done
	TRANSPORT=${TRANSPORTS%% *}
done
SUFFIX=""
# every transport's report compares with the same direct runs
ALSO=()
for tr in ${TRANSPORTS#"$TRANSPORT"}; do
	cp "$RAW"/direct-* "$RAW/clean-$tr/"
	ALSO+=(-also "$RAW/clean-$tr")
done

# lossy_emulator DELAY_MS LOSS_PCT SEED: the emulator restarted for the
# next flow of a round with the round's seed, so that every flow of the
# round (no tunnel and each transport) is dealt the same sequence of loss
# draws, frame by frame: a round compares the transports on the same luck
# (common random numbers), and each round and condition has a seed of its
# own. A cubic flow at 50 ms and 1% is a few thousand frames in 10 s; dealt
# draws of their own, the udp flows of one run lost 1.31% of theirs where
# the no-tunnel flows lost 1.00%: ~0.87x the rate from the draw alone.
lossy_emulator() {
	lib_wanemu "$1" "$2" "$3" >/dev/null && return 0
	fail_step "$MODE$SUFFIX" "cannot restart the WAN emulator"
	return 1
}

# lossy_flow: the lossy section's measured flow, between two snapshots of
# the emulator's counters ($RAW/$MODE-wanemu-{before,after}$SUFFIX.json), so
# that the report gives the loss each flow was dealt and the frames dropped
# for a full queue while it ran (so far only under kcp+FEC, whose parity
# fills the delay line).
lossy_flow() {
	wanemu_snapshot before
	IPERF_DURATION=$LOSSY_DURATION iperf tcp-up-1
	wanemu_snapshot after
}

wanemu_snapshot() {
	"$LIB_ROOT/scripts/topology.sh" wanemu-stats "$PREFIX" >"$RAW/$MODE-wanemu-$1$SUFFIX.json" ||
		fail_step "$MODE-wanemu-$1$SUFFIX" "no emulator counters"
}

# ping_rtt: idle ping vm->pod to $RAW/$MODE-ping.txt; some lost replies are
# fine on a lossy link, no reply at all is a failure.
ping_rtt() {
	local f="$RAW/$MODE-ping$SUFFIX.txt"
	printf '  %-12s %-7s ping -c 40 -i 0.05 -q ... ' ping "$MODE"
	ip netns exec "$PREFIX-vm" ping -c 40 -i 0.05 -q -W 2 "$POD_IP" >"$f" 2>&1 || true
	if grep -q '^rtt' "$f"; then
		echo "ok ($(grep -o '[0-9.]*% packet loss' "$f"), $(grep -o 'rtt.*' "$f"))"
	else
		echo "FAILED"
		fail_step "$MODE-ping$SUFFIX" "$(tail -n 2 "$f" | tr '\n' ' ')"
	fi
}

# allow_cc CC: make CC usable in the namespaces (see the header); the old
# list is restored by on_cleanup.
CC_ALLOWED_ORIG=""
allow_cc() {
	local allowed
	allowed=$(sysctl -n net.ipv4.tcp_allowed_congestion_control)
	[[ " $allowed " == *" $1 "* ]] && return 0
	grep -qw "$1" /proc/sys/net/ipv4/tcp_available_congestion_control ||
		modprobe -q "tcp_$1" 2>/dev/null || true
	[ -n "$CC_ALLOWED_ORIG" ] || CC_ALLOWED_ORIG=$allowed
	sysctl -q -w net.ipv4.tcp_allowed_congestion_control="$allowed $1" >/dev/null ||
		die "cannot allow TCP congestion control $1 (net.ipv4.tcp_allowed_congestion_control: $allowed)"
	note "allowed TCP congestion control $1 for this run (root namespace's list was: $allowed)"
}
on_cleanup() {
	if [ -n "$CC_ALLOWED_ORIG" ]; then
		sysctl -q -w net.ipv4.tcp_allowed_congestion_control="$CC_ALLOWED_ORIG" >/dev/null ||
			echo "bench: could not restore net.ipv4.tcp_allowed_congestion_control=$CC_ALLOWED_ORIG" >&2
	fi
}

# lossy_pass CC: the lossy-link conditions with TCP congestion control CC,
# gtund started afresh so its listener and sessions use CC too.
lossy_pass() {
	local cc=$1 c h delay loss tag tr fec lround seed gtund_fec="" transports='["tcp", "udp", "kcp"]'
	allow_cc "$cc"
	for h in vm vm2 gw node pod; do
		inns "$h" sysctl -q -w net.ipv4.tcp_congestion_control="$cc" >/dev/null ||
			die "cannot set TCP congestion control $cc in namespace $PREFIX-$h"
	done
	printf '\n  %sTCP congestion control: %s%s\n' "$B" "$(inns vm sysctl -n net.ipv4.tcp_congestion_control)" "$N"
	# gtund listens with both transports; kcp is n/a if it refuses that
	KCP_NA=""
	TRANSPORT=tcp GTUND_TRANSPORTS=$transports lib_write_configs
	if ! lib_try_start_gtund; then
		KCP_NA="gtund does not start with transports = [\"tcp\", \"udp\", \"kcp\"]: $LIB_ERR: $(tail -n 1 "$D/gtund.log" | sed "s/^ *//" | cut -c1-200)"
		mv "$D/gtund.log" "$RAW/gtund-kcp-refused.txt"
		note "kcp: n/a ($KCP_NA); gtund with tcp only"
		transports='["tcp"]'
		TRANSPORT=tcp GTUND_TRANSPORTS=$transports lib_write_configs
		lib_try_start_gtund || die "$LIB_ERR"
	elif ! inns gw ss -Hlun "sport = :$PORT" | grep -q .; then
		KCP_NA="gtund does not listen on udp $GW_WAN:$PORT"
		note "kcp: n/a ($KCP_NA)"
	fi
	[ -z "$KCP_NA" ] || meta "lossy.$cc.kcp_na" "$KCP_NA"
	for c in $LOSSY_CONDITIONS; do
		delay=${c%%:*} loss=${c##*:}
		tag=$cc-d$delay-l$loss
		printf '\n  %slink: %s ms each way (RTT +%s ms), %s%% loss each way, %s%s\n' "$B" "$delay" \
			"$(awk -v d="$delay" 'BEGIN {print 2 * d}')" "$loss" "$cc" "$N"
		if ! lib_wanemu "$delay" "$loss"; then
			fail_step "lossy-$tag" "cannot start the WAN emulator"
			continue
		fi
		for ((lround = 1; lround <= LOSSY_ROUNDS; lround++)); do
			SUFFIX=""
			[ "$lround" -eq 1 ] || SUFFIX=".r$lround"
			[ "$LOSSY_ROUNDS" -eq 1 ] || printf '    round %s/%s\n' "$lround" "$LOSSY_ROUNDS"
			lossy_seq=$((lossy_seq + 1))
			seed=$((LOSSY_SEED + lossy_seq))
			MODE=lossy-$tag-direct
			if lossy_emulator "$delay" "$loss" "$seed"; then
				ip -n "$PREFIX-vm" route add 10.244.0.0/16 via "$GW_WAN"
				ping_rtt
				lossy_flow
				ip -n "$PREFIX-vm" route del 10.244.0.0/16 via "$GW_WAN"
			fi
			for tr in tcp udp kcp ${LOSSY_FEC:+kcp-fec}; do
				MODE=lossy-$tag-$tr
				if [ "$tr" != tcp ] && [ -n "$KCP_NA" ]; then
					note "$MODE: n/a"
					continue
				fi
				fec=""
				[ "$tr" = kcp-fec ] && fec=$LOSSY_FEC
				if [ "$fec" != "$gtund_fec" ]; then
					# FEC must match on both sides: gtund again with this setting
					lib_stop gtund 10
					FEC=$fec TRANSPORT=kcp GTUND_TRANSPORTS=$transports lib_write_configs >/dev/null
					lib_try_start_gtund >/dev/null || die "gtund with FEC '$fec': $LIB_ERR"
					gtund_fec=$fec
				fi
				lossy_emulator "$delay" "$loss" "$seed" || continue
				FEC=$fec TRANSPORT=${tr%-fec} GTUND_TRANSPORTS=$transports lib_write_configs >/dev/null
				lib_start gtun vm "$GTUN_BIN" -c "$D/gtun.toml" >/dev/null
				if lib_try_wait_route 30; then
					ip -n "$PREFIX-vm" route get "$POD_IP" | grep -q 'dev gtun0' || die "traffic to $POD_IP would not use gtun0"
					ping_rtt
					lossy_flow
				else
					fail_step "$MODE" "transport $tr: $LIB_ERR"
				fi
				lib_stop gtun 10
				[ "$STOP_RC" -eq 0 ] || fail_step "$MODE-stop" "gtun exit status $STOP_RC after SIGTERM (want 0)"
				cp "$D/gtun.log" "$RAW/$MODE-gtun$SUFFIX.txt"
				if ! lib_alive "${PIDS[gtund]}"; then
					die "gtund exited during the lossy-link tests"
				fi
			done
		done
		SUFFIX=""
	done
	lib_stop gtund 10
	[ "$STOP_RC" -eq 0 ] || fail_step "lossy-$cc-gtund-stop" "exit status $STOP_RC after SIGTERM (want 0)"
	cp "$D/gtund.log" "$RAW/lossy-$cc-gtund.txt"
}

lossy() {
	local cc
	hdr "lossy link: topology $PREFIX rebuilt with the WAN emulator (tools/wanemu) between vm and gw"
	meta lossy.conditions "$LOSSY_CONDITIONS"
	meta lossy.duration_s "$LOSSY_DURATION"
	meta lossy.rounds "$LOSSY_ROUNDS"
	meta lossy.seed "$LOSSY_SEED"
	meta lossy.ccs "$LOSSY_CCS"
	meta lossy.fec "$LOSSY_FEC"
	meta lossy.transports "tcp udp kcp"
	lib_stop iperf3 3
	MTU=1400 # the emulator's links are 1500 bytes, whatever LINK_MTU was
	lib_topology_up_wanemu
	start_iperf_server
	for cc in $LOSSY_CCS; do
		lossy_pass "$cc"
	done
}
if [ "$LOSSY" = 1 ]; then lossy; fi

hdr "report"
"$D/benchreport" -dir "$RAW" "${ALSO[@]}" -out "$OUT"
if [ "$KEEP" = 1 ]; then note "raw measurements: $RAW"; fi
[ $FAILED = 0 ] || die "some measurements failed (see above; logs in $D)"
