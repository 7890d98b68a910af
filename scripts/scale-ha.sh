#!/usr/bin/env bash
# Scale test of a replicated gateway: N concurrent authenticated sessions
# over two gtund replicas sharing their peers and leases in etcd.
#
#   topology.sh --replicas: gtund in PREFIX-gw (198.51.100.2) and PREFIX-gwb
#   (198.51.100.4), one key, [store] backend = "etcd"; one etcd member in
#   PREFIX-node (10.0.9.1); the N peers of `loadgen genkeys` brought into
#   etcd with `gtund store import` (as a file store moved to etcd is).
#   Two tools/loadgen in PREFIX-vm, N/2 sessions each, one per replica,
#   CONCURRENCY handshakes at a time each; IDLE s with keepalives only, then
#   HOLD s with one UDP packet per session per second to the pod.
#
# Reports, per replica, handshakes/s, setup latency and RSS per idle session
# ((VmRSS all idle - VmRSS before any session) / sessions on it), and the
# leases each replica claimed from etcd; writes
# bench/results/scale-ha-<timestamp>-{gw,gwb}.json. Exits non-zero when a
# session failed or ended.
#
#   scripts/scale-ha.sh                  (root; bin/gtund from make build; etcd)
#   SESSIONS=1000 HOLD=10 KEEP=1 scripts/scale-ha.sh
set -euo pipefail
PREFIX=${PREFIX:-scaleha}
SESSIONS=${SESSIONS:-5000}
CONCURRENCY=${CONCURRENCY:-50}
IDLE=${IDLE:-10}
HOLD=${HOLD:-30}
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

lib_init
RAW=$D/raw
mkdir -p "$RAW" "$D/import"
TS=$(date -u +%Y%m%dT%H%M%SZ)
OUTDIR=${OUTDIR:-$LIB_ROOT/bench/results}
mkdir -p "$OUTDIR"
HALF=$((SESSIONS / 2))
ETCD=http://10.0.9.1:2379

hdr "setup: loadgen, topology with replicas (prefix $PREFIX), etcd, $SESSIONS client keys"
(cd "$LIB_ROOT" && CGO_ENABLED=0 go build -o "$D/loadgen" ./tools/loadgen) || die "cannot build tools/loadgen"
LOADGEN=$D/loadgen
"$LIB_ROOT/scripts/deps.sh"
LIB_TOPOLOGY_UP=1
"$LIB_ROOT/scripts/topology.sh" up "$PREFIX" --replicas
lib_keys
(umask 077 && "$LOADGEN" genkeys -n "$SESSIONS" -priv "$D/load.keys" -peers "$D/import/peers.toml") || die "loadgen genkeys failed"
head -n "$HALF" "$D/load.keys" >"$D/gw.keys"
tail -n +"$((HALF + 1))" "$D/load.keys" >"$D/gwb.keys"

lib_start etcd node etcd --name m1 --data-dir "$D/etcd" \
	--listen-client-urls "$ETCD" --advertise-client-urls "$ETCD" \
	--listen-peer-urls http://10.0.9.1:2380 --initial-advertise-peer-urls http://10.0.9.1:2380 \
	--initial-cluster m1=http://10.0.9.1:2380 --initial-cluster-state new
for ((i = 0; i < 100; i++)); do
	ETCDCTL_API=3 inns node etcdctl --endpoints "$ETCD" endpoint health >/dev/null 2>&1 && break
	sleep 0.2
done
ETCDCTL_API=3 inns node etcdctl --endpoints "$ETCD" endpoint health >/dev/null 2>&1 || die "etcd not healthy after 20 s"

for r in gw gwb; do
	case $r in gw) wan=198.51.100.2 ;; gwb) wan=198.51.100.4 ;; esac
	cat >"$D/$r.toml" <<-TOML
		[server]
		listen = "$wan:$PORT"
		transports = ["tcp"]
		private_key_file = "$D/server.key"
		pool = "100.64.0.0/19"
		routes = ["10.244.0.0/16"]
		state_dir = "$D/$r-state"
		control_socket = "$D/$r.sock"
		# One load tool is $HALF clients behind one address: lift the
		# per-source handshake limits that would rightly stop one host.
		handshake_rate = 1000000
		handshake_burst = 1000000
		max_handshakes_per_source = 256

		[store]
		backend = "etcd"
		endpoints = ["$ETCD"]
		prefix = "/gtun/scale"
		replica = "$r"

		[log]
		level = "warn"
	TOML
done
inns gw "$GTUND_BIN" store import -c "$D/gw.toml" --from "$D/import" || die "gtund store import failed"

for r in gw gwb; do
	lib_start "gtund-$r" "$r" "$GTUND_BIN" -c "$D/$r.toml"
done
for r in gw gwb; do
	for ((i = 0; i < 200; i++)); do
		"$GTUND_BIN" status --socket "$D/$r.sock" >/dev/null 2>&1 && break
		lib_alive "${PIDS[gtund-$r]}" || die "gtund on $r exited at startup"
		sleep 0.1
	done
done
sleep 2 # both loaded the store and settled: the baseline
for r in gw gwb; do
	cp "/proc/${PIDS[gtund-$r]}/status" "$RAW/$r-before.status"
	note "gtund on $r pid ${PIDS[gtund-$r]}, VmRSS before any session: $(awk '/^VmRSS:/ {print $2}' "$RAW/$r-before.status") KiB"
done

hdr "load: $HALF sessions to each replica, $CONCURRENCY at a time each; idle ${IDLE}s; hold ${HOLD}s"
for r in gw gwb; do
	case $r in gw) wan=198.51.100.2 ;; gwb) wan=198.51.100.4 ;; esac
	pid=${PIDS[gtund-$r]}
	lib_start "loadgen-$r" vm "$LOADGEN" -server "$wan:$PORT" -server-key "$SERVER_PUB" -keys "$D/$r.keys" \
		-n "$HALF" -concurrency "$CONCURRENCY" -idle-first "${IDLE}s" -hold "${HOLD}s" -traffic-dst "$POD_IP" \
		-watch-pid "$pid" -out "$RAW/loadgen-$r.json" \
		-at-idle "cp /proc/$pid/status $RAW/$r-idle.status" \
		-at-end "cp /proc/$pid/status $RAW/$r-end.status; $GTUND_BIN status --json --socket $D/$r.sock >$RAW/$r-status-end.json"
done
RC=0
for r in gw gwb; do
	wait "${PIDS[loadgen-$r]}" || RC=$?
	unset "PIDS[loadgen-$r]"
done

hdr "report"
for r in gw gwb; do
	lib_alive "${PIDS[gtund-$r]}" || die "gtund on $r exited during the run"
	"$LOADGEN" report -in "$RAW/loadgen-$r.json" -out "$OUTDIR/scale-ha-$TS-$r.json" -loadgen-exit "$RC" \
		-rss-before "$RAW/$r-before.status" -rss-idle "$RAW/$r-idle.status" -rss-end "$RAW/$r-end.status" \
		-status "$RAW/$r-status-end.json" \
		-meta "timestamp=$TS" -meta "kernel=$(uname -r)" -meta "cpus=$(nproc)" -meta "replica=$r" -meta "store=etcd" \
		-meta "commit=$(git -C "$LIB_ROOT" rev-parse --short HEAD 2>/dev/null || echo none)" \
		-meta "concurrency=$CONCURRENCY" -meta "idle_s=$IDLE" -meta "hold_s=$HOLD" || die "report for $r failed"
done
LEASES=$(ETCDCTL_API=3 inns node etcdctl --endpoints "$ETCD" get --prefix /gtun/scale/leases/ --keys-only | grep -c /leases/ || true)
note "leases in etcd: $LEASES (want $SESSIONS)"
for r in gw gwb; do
	lib_stop "gtund-$r" 10
	[ "$STOP_RC" -eq 0 ] || die "gtund on $r exit status $STOP_RC after SIGTERM (want 0)"
done
[ "$RC" -eq 0 ] || die "not all $SESSIONS sessions were set up and stayed up (see above)"
[ "$LEASES" = "$SESSIONS" ] || die "etcd holds $LEASES leases, want $SESSIONS"
ok "all $SESSIONS sessions over two replicas set up and up for ${IDLE}s idle + ${HOLD}s with traffic"
