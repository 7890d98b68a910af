# shellcheck shell=bash disable=SC2034 # variables are for the sourcing scripts
# Shared setup for scripts/demo.sh and scripts/bench.sh: topology, keys,
# configs, starting and stopping the daemons, waiting for the tunnel route.
# Source it from a bash script running with `set -euo pipefail`.
#
# Knobs (environment):
#   PREFIX     namespace prefix (the sourcing script sets a default)
#   TRANSPORT  tcp | udp | kcp                 (default tcp)
#   GTUND_TRANSPORTS  gtund's transports list, TOML (default ["tcp"], or
#              ["tcp", "udp", "kcp"] with TRANSPORT=udp or kcp)
#   KEEP=1     keep the work directory (configs, keys, logs) after exit
#   MTU        gtund's tunnel mtu (default 1400, for the topology's
#              1500-byte links)
#   GTUN_BIN, GTUND_BIN, PODHTTP_BIN           binaries (default bin/...)

LIB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GTUN_BIN=${GTUN_BIN:-$LIB_ROOT/bin/gtun}
GTUND_BIN=${GTUND_BIN:-$LIB_ROOT/bin/gtund}
PODHTTP_BIN=${PODHTTP_BIN:-$LIB_ROOT/bin/podhttp}
PREFIX=${PREFIX:-gt}
TRANSPORT=${TRANSPORT:-tcp}
KEEP=${KEEP:-0}

GW_WAN=198.51.100.2
PORT=9623
POD_IP=10.244.1.20
CLUSTER_IP=10.96.0.10

D=""               # work directory: keys, configs, logs, state
declare -A PIDS=() # name -> pid of the background processes we started
LIB_TOPOLOGY_UP=0
LIB_ERR="" # why the last lib_try_* failed

if [ -t 1 ]; then B=$'\033[1m' R=$'\033[31m' G=$'\033[32m' N=$'\033[0m'; else B="" R="" G="" N=""; fi

hdr() { printf '\n%s==== %s%s\n' "$B" "$*" "$N"; }
note() { printf '  %s\n' "$*"; }
die() {
	printf '%sFAIL: %s%s\n' "$R" "$*" "$N" >&2
	exit 1
}
ok() { printf '%s%s%s\n' "$G" "$*" "$N"; }

# inns HOST CMD...: run CMD in the namespace of HOST
inns() {
	local h=$1
	shift
	ip netns exec "$PREFIX-$h" "$@"
}

# show CMD...: print the command, then run it
show() {
	printf '%s$ %s%s\n' "$B" "$*" "$N"
	"$@"
}

# lib_init: checks, work directory, EXIT trap. Call first.
lib_init() {
	[ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces, TUN, nftables)"
	local b
	for b in "$GTUN_BIN" "$GTUND_BIN"; do
		[ -x "$b" ] || die "$b not found: run 'make build' first"
	done
	if [ ! -x "$PODHTTP_BIN" ]; then
		note "building $PODHTTP_BIN"
		(cd "$LIB_ROOT" && go build -o "$PODHTTP_BIN" ./tools/podhttp) || die "cannot build tools/podhttp"
	fi
	case $TRANSPORT in tcp | udp | kcp) ;; *) die "TRANSPORT must be tcp, udp or kcp, not '$TRANSPORT'" ;; esac
	D=$(mktemp -d "/tmp/gtun-$PREFIX.XXXXXX")
	chmod 700 "$D"
	trap lib_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

# lib_cleanup: the EXIT trap. Stops only the processes we started (by PID),
# removes the topology, removes the work directory unless KEEP=1 or failure.
lib_cleanup() {
	local rc=$?
	set +e
	trap - EXIT
	if declare -F on_cleanup >/dev/null; then on_cleanup; fi
	if [ $rc -ne 0 ] && [ -n "$D" ]; then
		lib_dump_logs
	fi
	local name
	for name in "${!PIDS[@]}"; do
		lib_alive "${PIDS[$name]}" && lib_stop "$name" 3
	done
	if [ "$LIB_TOPOLOGY_UP" = 1 ]; then
		"$LIB_ROOT/scripts/topology.sh" down "$PREFIX" || rc=1
	fi
	if [ -n "$D" ]; then
		if [ "$KEEP" = 1 ] || [ $rc -ne 0 ]; then
			note "work directory kept: $D"
		else
			rm -rf "$D"
		fi
	fi
	exit $rc
}

lib_dump_logs() {
	local f
	for f in "$D"/*.log; do
		[ -e "$f" ] || continue
		case $f in */iperf3.log) continue ;; esac
		printf '\n%s---- %s (last 40 lines)%s\n' "$B" "$f" "$N" >&2
		tail -n 40 "$f" >&2
	done
}

# lib_topology_up: install missing tools, build the namespaces.
lib_topology_up() {
	"$LIB_ROOT/scripts/deps.sh"
	LIB_TOPOLOGY_UP=1
	"$LIB_ROOT/scripts/topology.sh" up "$PREFIX"
	note "namespaces: $PREFIX-vm $PREFIX-vm2 $PREFIX-gw $PREFIX-node $PREFIX-pod"
}

# lib_topology_up_wanemu: the same with the wan link going through the WAN
# emulator in $PREFIX-wan (topology.sh --wanemu; no delay, no loss yet).
lib_topology_up_wanemu() {
	"$LIB_ROOT/scripts/deps.sh"
	LIB_TOPOLOGY_UP=1
	"$LIB_ROOT/scripts/topology.sh" up "$PREFIX" --wanemu
	note "namespaces: $PREFIX-vm $PREFIX-vm2 $PREFIX-gw $PREFIX-node $PREFIX-pod, $PREFIX-wan (WAN emulator)"
}

# lib_wanemu DELAY_MS LOSS_PCT [SEED]: restart the WAN emulator (topology
# built with lib_topology_up_wanemu) with that one-way delay and loss each
# way; SEED fixes the loss draws (default 0: random).
lib_wanemu() {
	"$LIB_ROOT/scripts/topology.sh" wanemu "$PREFIX" "$1" "$2" "${3:-0}"
}

# lib_keys: server and client key pairs in $D; sets SERVER_PUB, CLIENT_PUB.
lib_keys() {
	(
		umask 077
		"$GTUND_BIN" genkey >"$D/server.key"
		"$GTUN_BIN" genkey >"$D/client.key"
	) || die "genkey failed"
	chmod 600 "$D/server.key" "$D/client.key"
	SERVER_PUB=$("$GTUND_BIN" pubkey <"$D/server.key") || die "gtund pubkey failed"
	CLIENT_PUB=$("$GTUN_BIN" pubkey <"$D/client.key") || die "gtun pubkey failed"
	if [ -z "$SERVER_PUB" ] || [ -z "$CLIENT_PUB" ]; then die "empty public key"; fi
	note "server public key: $SERVER_PUB"
	note "client public key: $CLIENT_PUB"
}

# lib_write_configs: $D/gtund.toml and $D/gtun.toml (DESIGN "Config contract").
lib_write_configs() {
	local transports='["tcp"]' fec=""
	# FEC=D:P: KCP forward error correction on both sides
	if [ -n "${FEC:-}" ]; then
		[[ $FEC =~ ^[0-9]+:[0-9]+$ ]] || die "FEC: want DATA:PARITY, e.g. 10:3 (got '$FEC')"
		fec=$(printf 'fec_data = %s\nfec_parity = %s' "${FEC%%:*}" "${FEC##*:}")
	fi
	[ "$TRANSPORT" = tcp ] || transports='["tcp", "udp", "kcp"]'
	transports=${GTUND_TRANSPORTS:-$transports}
	cat >"$D/gtund.toml" <<-TOML
		[server]
		listen = "$GW_WAN:$PORT"
		transports = $transports
		private_key_file = "$D/server.key"
		tun = "gtund0"
		mtu = ${MTU:-1400}
		pool = "100.64.240.0/24"
		routes = ["10.244.0.0/16", "10.96.0.0/12"]
		nat = true
		state_dir = "$D/state"
		control_socket = "$D/gtund.sock"
		$fec

		[[peer]]
		name = "$PREFIX-vm"
		public_key = "$CLIENT_PUB"

		[log]
		level = "info"
	TOML
	cat >"$D/gtun.toml" <<-TOML
		[client]
		private_key_file = "$D/client.key"
		tun = "gtun0"
		control_socket = "$D/gtun.sock"

		[[server]]
		name = "$PREFIX-cluster"
		endpoints = ["$GW_WAN:$PORT"]
		transport = "$TRANSPORT"
		public_key = "$SERVER_PUB"
		$fec

		[log]
		level = "info"
	TOML
	note "configs: $D/gtund.toml $D/gtun.toml"
}

# lib_start NAME HOST CMD...: run CMD in HOST's namespace in the background,
# output to $D/NAME.log. `ip netns exec` execs CMD in place, so the PID is
# CMD's own.
lib_start() {
	local name=$1 host=$2
	shift 2
	ip netns exec "$PREFIX-$host" "$@" >"$D/$name.log" 2>&1 </dev/null &
	PIDS[$name]=$!
	note "started $name in $PREFIX-$host (pid ${PIDS[$name]}), log $D/$name.log"
}

# lib_alive PID: running (not exited, not a zombie)
lib_alive() {
	local st
	st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
	[ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# lib_stop NAME [TIMEOUT]: SIGTERM, wait up to TIMEOUT s (default 10), then
# SIGKILL. Sets STOP_RC to the exit status (128+N if killed by signal N) and
# STOP_KILLED=1 if SIGKILL was needed. Always returns 0. Do not call it in
# $(...): only this shell can reap its children.
lib_stop() {
	local name=$1 timeout=${2:-10} pid=${PIDS[$1]} i
	STOP_RC=0 STOP_KILLED=0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < timeout * 10; i++)); do
		lib_alive "$pid" || break
		sleep 0.1
	done
	if lib_alive "$pid"; then
		echo "  $name (pid $pid) still running ${timeout}s after SIGTERM: SIGKILL" >&2
		kill -KILL "$pid" 2>/dev/null || true
		STOP_KILLED=1
	fi
	wait "$pid" 2>/dev/null || STOP_RC=$?
	unset "PIDS[$name]"
	return 0
}

# lib_start_pod_http: podhttp on :8080 in the pod, waits until it answers.
lib_start_pod_http() {
	lib_start podhttp pod "$PODHTTP_BIN" -listen :8080
	local i
	for ((i = 0; i < 50; i++)); do
		inns node curl -fsS --max-time 1 "http://$POD_IP:8080/healthz" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	die "podhttp did not answer on $POD_IP:8080"
}

# lib_try_start_gtund: gtund in gw, until it listens on tcp (up to 10 s).
# Returns 1 with LIB_ERR set (and gtund stopped) if it exits or does not
# listen.
lib_try_start_gtund() {
	local i
	LIB_ERR=""
	lib_start gtund gw "$GTUND_BIN" -c "$D/gtund.toml"
	for ((i = 0; i < 100; i++)); do
		inns gw ss -Hltn "sport = :$PORT" | grep -q . && return 0
		if ! lib_alive "${PIDS[gtund]}"; then
			lib_stop gtund 1
			LIB_ERR="gtund exited at startup"
			return 1
		fi
		sleep 0.1
	done
	lib_stop gtund 3
	LIB_ERR="gtund does not listen on tcp $GW_WAN:$PORT after 10 s"
	return 1
}

# lib_start_daemons: gtund in gw; once it listens (up to 10 s), gtun in vm.
lib_start_daemons() {
	lib_try_start_gtund || die "$LIB_ERR"
	lib_start gtun vm "$GTUN_BIN" -c "$D/gtun.toml"
}

# lib_try_wait_route [TIMEOUT]: until vm routes 10.244.0.0/16 via gtun0
# (default 15 s). Returns 1 with LIB_ERR set on timeout, or early if a
# daemon exits.
lib_try_wait_route() {
	local timeout=${1:-15} i name
	LIB_ERR=""
	for ((i = 0; i < timeout * 10; i++)); do
		if ip -n "$PREFIX-vm" route show 10.244.0.0/16 2>/dev/null | grep -q 'dev gtun0'; then
			note "route 10.244.0.0/16 dev gtun0 installed after $((i / 10)).$((i % 10)) s"
			return 0
		fi
		for name in gtund gtun; do
			[ -n "${PIDS[$name]:-}" ] || continue
			if ! lib_alive "${PIDS[$name]}"; then
				LIB_ERR="$name exited before the tunnel came up"
				return 1
			fi
		done
		sleep 0.1
	done
	LIB_ERR="no route 10.244.0.0/16 dev gtun0 in $PREFIX-vm after ${timeout}s"
	return 1
}

# lib_wait_route [TIMEOUT]: lib_try_wait_route, fatal on failure.
lib_wait_route() {
	lib_try_wait_route "$@" && return 0
	echo "vm routes:" >&2
	ip -n "$PREFIX-vm" route >&2 || true
	die "$LIB_ERR"
}

# lib_cpu_ticks PID: utime+stime in clock ticks
lib_cpu_ticks() {
	sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}

# lib_hwm_kb PID: peak resident set size (VmHWM) in KiB
lib_hwm_kb() {
	awk '/^VmHWM:/ {print $2}' "/proc/$1/status"
}
