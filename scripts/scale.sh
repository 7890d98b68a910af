#!/usr/bin/env bash
# Scale test (make scale): N concurrent authenticated sessions to one gtund.
#
#   gtund in PREFIX-gw (pool 100.64.0.0/20, N [[peer]]s from `loadgen genkeys`)
#   tools/loadgen in PREFIX-vm: N sessions built from the protocol packages
#   (no TUN on the client side), CONCURRENCY handshakes at a time; then IDLE s
#   with keepalives only, then HOLD s sending one UDP packet per session per
#   second to the pod (10.244.1.20:9, through gtund's NAT).
#
# Reports handshakes/s and setup latency, gtund's RSS per idle session
# ((VmRSS all idle - VmRSS before any session) / N), its peak RSS (VmHWM),
# whether all N sessions stayed up through the hold (loadgen's view, and the
# connected peers in `gtund status --json` at its end). Prints a table and
# writes bench/results/scale-<timestamp>.json. Exits non-zero when a session
# failed or ended, or the setup failed; the memory target is reported only.
#
#   scripts/scale.sh                     (root; bin/gtund from make build)
#   SESSIONS=200 HOLD=20 KEEP=1 scripts/scale.sh
set -euo pipefail
PREFIX=${PREFIX:-scale}
SESSIONS=${SESSIONS:-1000}
CONCURRENCY=${CONCURRENCY:-50}
IDLE=${IDLE:-10}
HOLD=${HOLD:-60}
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Two sockets per session in this run (gtund's and loadgen's), in different
# processes, but leave room: raise the soft limit, and the hard one if we may.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

lib_init
RAW=$D/raw
mkdir -p "$RAW"
TS=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$LIB_ROOT/bench/results/scale-$TS.json}
mkdir -p "$(dirname "$OUT")"

hdr "setup: loadgen, topology (prefix $PREFIX), $SESSIONS client keys, gtund config"
(cd "$LIB_ROOT" && CGO_ENABLED=0 go build -o "$D/loadgen" ./tools/loadgen) || die "cannot build tools/loadgen"
LOADGEN=$D/loadgen
lib_topology_up
lib_keys
(umask 077 && "$LOADGEN" genkeys -n "$SESSIONS" -priv "$D/load.keys" -peers "$D/peers.toml") || die "loadgen genkeys failed"
cat >"$D/gtund.toml" <<-TOML
	[server]
	listen = "$GW_WAN:$PORT"
	transports = ["tcp"]
	private_key_file = "$D/server.key"
	tun = "gtund0"
	mtu = 1400
	pool = "100.64.0.0/20"
	routes = ["10.244.0.0/16"]
	nat = true
	state_dir = "$D/state"
	control_socket = "$D/gtund.sock"
	# The load tool is $SESSIONS clients behind one address: lift the
	# per-source handshake limits that would rightly stop one host doing this.
	handshake_rate = 1000000
	handshake_burst = 1000000
	max_handshakes_per_source = 256

	[log]
	level = "warn"

TOML
cat "$D/peers.toml" >>"$D/gtund.toml"
note "config: $D/gtund.toml ($SESSIONS peers, pool 100.64.0.0/20, keepalive default)"

lib_start gtund gw "$GTUND_BIN" -c "$D/gtund.toml"
for ((i = 0; i < 100; i++)); do
	inns gw ss -Hltn "sport = :$PORT" | grep -q . && break
	lib_alive "${PIDS[gtund]}" || die "gtund exited at startup"
	sleep 0.1
done
inns gw ss -Hltn "sport = :$PORT" | grep -q . || die "gtund does not listen on tcp $GW_WAN:$PORT after 10 s"
GTUND_PID=${PIDS[gtund]}
sleep 1 # let its startup settle before the baseline
cp "/proc/$GTUND_PID/status" "$RAW/gtund-before.status"
note "gtund pid $GTUND_PID, VmRSS before any session: $(awk '/^VmRSS:/ {print $2}' "$RAW/gtund-before.status") KiB"

hdr "load: $SESSIONS sessions, $CONCURRENCY at a time; idle ${IDLE}s; hold ${HOLD}s with traffic to $POD_IP:9"
# The hooks run inside the vm namespace; /proc and the control socket (a
# filesystem path) are the same there.
lib_start loadgen vm "$LOADGEN" -server "$GW_WAN:$PORT" -server-key "$SERVER_PUB" -keys "$D/load.keys" \
	-n "$SESSIONS" -concurrency "$CONCURRENCY" -idle-first "${IDLE}s" -hold "${HOLD}s" -traffic-dst "$POD_IP" \
	-watch-pid "$GTUND_PID" -out "$RAW/loadgen.json" \
	-at-idle "cp /proc/$GTUND_PID/status $RAW/gtund-idle.status" \
	-at-end "cp /proc/$GTUND_PID/status $RAW/gtund-end.status; $GTUND_BIN status --json --socket $D/gtund.sock >$RAW/status-end.json"
LOADGEN_PID=${PIDS[loadgen]}
tail -n +1 -f --pid="$LOADGEN_PID" "$D/loadgen.log" | sed 's/^/  /' &
TAIL_PID=$!
LOADGEN_RC=0
wait "$LOADGEN_PID" || LOADGEN_RC=$?
unset "PIDS[loadgen]"
wait "$TAIL_PID" 2>/dev/null || true
[ -s "$RAW/loadgen.json" ] || die "loadgen wrote no result (exit $LOADGEN_RC)"

lib_alive "$GTUND_PID" || die "gtund exited during the run"
lib_stop gtund 10
GTUND_RC=$STOP_RC

hdr "report"
"$LOADGEN" report -in "$RAW/loadgen.json" -out "$OUT" -loadgen-exit "$LOADGEN_RC" \
	-rss-before "$RAW/gtund-before.status" -rss-idle "$RAW/gtund-idle.status" -rss-end "$RAW/gtund-end.status" \
	-status "$RAW/status-end.json" \
	-meta "timestamp=$TS" -meta "kernel=$(uname -r)" -meta "cpus=$(nproc)" \
	-meta "commit=$(git -C "$LIB_ROOT" rev-parse --short HEAD 2>/dev/null || echo none)" \
	-meta "gtund_exit=$GTUND_RC" -meta "concurrency=$CONCURRENCY" -meta "idle_s=$IDLE" -meta "hold_s=$HOLD" ||
	die "report failed"
note "written: $OUT"
[ "$GTUND_RC" -eq 0 ] || die "gtund exit status $GTUND_RC after SIGTERM (want 0)"
[ "$LOADGEN_RC" -eq 0 ] || die "not all $SESSIONS sessions were set up and stayed up for ${HOLD}s (see above)"
ok "all $SESSIONS sessions set up and up for ${IDLE}s idle + ${HOLD}s with traffic"
