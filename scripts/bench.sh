#!/usr/bin/env bash
# Throughput / latency / packet-rate / CPU / memory report (make bench).
# One run measures direct routing and the tunnel on the same topology:
#
#   direct: vm routes 10.244.0.0/16 via gw's wan address (no tunnel)
#   tunnel: gtund in gw, gtun in vm, routes pushed to gtun0
#
# iperf3 TCP vm->pod and pod->vm (-R), 1 and 4 streams; ping RTT; UDP 64-byte
# received packet rate both ways; CPU seconds per GB and peak RSS of gtun and
# gtund. Prints a table and writes bench/results/<timestamp>.json.
# It only reports: there are no thresholds. Exits non-zero only when the
# setup or a measurement failed outright.
#
#   scripts/bench.sh                 (root; bin/gtun, bin/gtund from make build)
#   DURATION=10 TRANSPORT=kcp scripts/bench.sh
set -euo pipefail
PREFIX=${PREFIX:-bench}
DURATION=${DURATION:-5}
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

lib_init
RAW=$D/raw
mkdir -p "$RAW"
TS=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$LIB_ROOT/bench/results/$TS.json}
META=$RAW/meta.env
FAILED=0

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
	echo "clk_tck=$(getconf CLK_TCK)"
	echo "cpus=$(nproc)"
} >"$META"

hdr "setup: report tool, dependencies, topology (prefix $PREFIX), keys, configs"
(cd "$LIB_ROOT" && go build -o "$D/benchreport" ./tools/benchreport) || die "cannot build tools/benchreport"
lib_topology_up
lib_keys
lib_write_configs
lib_start iperf3 pod iperf3 -s -B "$POD_IP"
for ((i = 0; i < 50; i++)); do
	inns pod ss -Hltn "sport = :5201" | grep -q 5201 && break
	sleep 0.1
done
inns pod ss -Hltn "sport = :5201" | grep -q 5201 || die "iperf3 server did not start"

# cpu_snapshot: "gtun_ticks gtund_ticks" (empty in direct mode)
cpu_snapshot() {
	[ "$MODE" = tunnel ] || return 0
	echo "$(lib_cpu_ticks "${PIDS[gtun]}") $(lib_cpu_ticks "${PIDS[gtund]}")"
}

# iperf TEST ARGS...: one iperf3 run from vm to the pod, JSON to $RAW/$MODE-TEST.json
iperf() {
	local test=$1 before after rc=0 err
	shift
	local f="$RAW/$MODE-$test.json"
	printf '  %-12s %-7s iperf3 %s ... ' "$test" "$MODE" "$*"
	before=$(cpu_snapshot)
	timeout $((DURATION + 30)) ip netns exec "$PREFIX-vm" \
		iperf3 -c "$POD_IP" -t "$DURATION" -J --connect-timeout 3000 "$@" >"$f" 2>"$f.err" || rc=$?
	after=$(cpu_snapshot)
	if [ $rc -ne 0 ]; then
		err=$(grep -o '"error":[^}]*' "$f" 2>/dev/null | head -1 || true)
		[ $rc = 124 ] && err="timed out after $((DURATION + 30))s"
		echo "FAILED"
		fail_step "$MODE-$test" "iperf3 exit $rc ${err:-$(head -c 300 "$f.err")}"
		rm -f "$f"
	else
		echo "ok"
		[ -s "$f.err" ] || rm -f "$f.err"
		if [ "$MODE" = tunnel ] && [ -n "$after" ]; then
			read -r b1 b2 <<<"$before"
			read -r a1 a2 <<<"$after"
			meta "cpu.$test.gtun" $((a1 - b1))
			meta "cpu.$test.gtund" $((a2 - b2))
		fi
	fi
	sleep 1 # let queues drain between runs
}

measure() {
	printf '  %-12s %-7s ping -c 20 -i 0.05 -q ... ' ping "$MODE"
	if ip netns exec "$PREFIX-vm" ping -c 20 -i 0.05 -q -W 2 "$POD_IP" >"$RAW/$MODE-ping.txt" 2>&1; then
		echo "ok ($(grep -o 'rtt.*' "$RAW/$MODE-ping.txt"))"
	else
		echo "FAILED"
		fail_step "$MODE-ping" "$(tail -n 2 "$RAW/$MODE-ping.txt" | tr '\n' ' ')"
	fi
	iperf tcp-up-1
	iperf tcp-down-1 -R
	iperf tcp-up-4 -P 4
	iperf tcp-down-4 -P 4 -R
	iperf udp64-up -u -l 64 -b 0
	iperf udp64-down -u -l 64 -b 0 -R
}

hdr "direct routing (no tunnel): vm -> 198.51.100.2 -> node -> pod"
MODE=direct
ip -n "$PREFIX-vm" route add 10.244.0.0/16 via "$GW_WAN"
measure
ip -n "$PREFIX-vm" route del 10.244.0.0/16 via "$GW_WAN"

hdr "tunnel: gtund in $PREFIX-gw, gtun in $PREFIX-vm, transport $TRANSPORT"
MODE=tunnel
lib_start_daemons
lib_wait_route 15
ip -n "$PREFIX-vm" route get "$POD_IP" | grep -q 'dev gtun0' || die "traffic to $POD_IP would not use gtun0"
for name in gtun gtund; do
	note "$name pid ${PIDS[$name]} comm $(cat "/proc/${PIDS[$name]}/comm")"
done
measure
for name in gtun gtund; do
	if lib_alive "${PIDS[$name]}"; then
		meta "rss.${name}_kb" "$(lib_hwm_kb "${PIDS[$name]}")"
	else
		fail_step "$name" "exited during the measurements"
	fi
done
for name in gtun gtund; do
	lib_stop "$name" 10
	[ "$STOP_RC" -eq 0 ] || fail_step "$name-stop" "exit status $STOP_RC after SIGTERM (want 0)"
done

hdr "report"
"$D/benchreport" -dir "$RAW" -out "$OUT"
if [ "$KEEP" = 1 ]; then note "raw measurements: $RAW"; fi
[ $FAILED = 0 ] || die "some measurements failed (see above; logs in $D)"
