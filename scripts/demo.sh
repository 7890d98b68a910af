#!/usr/bin/env bash
# End-to-end demo (make demo): builds the test topology with prefix "demo",
# runs gtund in demo-gw and gtun in demo-vm, and reaches the pod IP and the
# ClusterIP from demo-vm through the tunnel. Exits 0 and prints "demo OK"
# when everything worked and both daemons cleaned up after SIGTERM.
#
#   scripts/demo.sh            (needs root, bin/gtun, bin/gtund; builds bin/podhttp if missing)
#   TRANSPORT=kcp KEEP=1 scripts/demo.sh
set -euo pipefail
PREFIX=${PREFIX:-demo}
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

lib_init

hdr "1. dependencies and topology (prefix $PREFIX)"
lib_topology_up
# What each namespace stands for, for a first-time reader of the output.
note "each namespace stands for a machine (scripts/topology.sh):"
note "  $PREFIX-vm   198.51.100.1   the VM that reaches the cluster: runs gtun"
note "  $PREFIX-vm2  172.16.0.2     another host of that VM's VPC (gateway mode; idle here)"
note "  $PREFIX-gw   198.51.100.2   the cluster VPC's gateway VM: runs gtund, 10.0.0.2 inside the VPC"
note "  $PREFIX-node 10.0.0.3       a cluster node: routes the pod network, DNATs ClusterIP 10.96.0.10:80"
note "  $PREFIX-pod  10.244.1.20    a pod: an HTTP server on :8080"

hdr "2. keys and configs in $D"
lib_keys
lib_write_configs
sed 's/^/    /' "$D/gtund.toml"
echo
sed 's/^/    /' "$D/gtun.toml"

hdr "3. start pod HTTP server, gtund (gw), gtun (vm); transport $TRANSPORT"
lib_start_pod_http
lib_start_daemons

hdr "4. wait for the pushed routes in $PREFIX-vm"
lib_wait_route 15

hdr "5. tunnel state in $PREFIX-vm"
show ip -n "$PREFIX-vm" addr show gtun0
show ip -n "$PREFIX-vm" route

hdr "6. traffic from $PREFIX-vm through the tunnel"
show ip netns exec "$PREFIX-vm" ping -c 3 -W 2 "$POD_IP" || die "ping $POD_IP through the tunnel failed"
note "(ClusterIP $CLUSTER_IP is DNATed for tcp/80 only, like kube-proxy: no ping to it)"
for url in "http://$POD_IP:8080/" "http://$CLUSTER_IP/"; do
	printf '%s$ ip netns exec %s curl -fsS --max-time 5 %s%s\n' "$B" "$PREFIX-vm" "$url" "$N"
	out=$(inns vm curl -fsS --max-time 5 "$url") || die "curl $url through the tunnel failed"
	echo "$out"
	[ "$out" = "hello from pod" ] || die "unexpected answer from $url: $out"
done

hdr "7. status from the control sockets"
show "$GTUN_BIN" status -c "$D/gtun.toml" || note "NOTE: 'gtun status' failed (exit $?)"
show "$GTUND_BIN" status -c "$D/gtund.toml" || note "NOTE: 'gtund status' failed (exit $?)"
if ! show ip netns exec "$PREFIX-gw" nft list table ip gtund; then
	note "NOTE: no 'table ip gtund' in $PREFIX-gw; its whole ruleset:"
	ip netns exec "$PREFIX-gw" nft list ruleset | sed 's/^/    /'
fi

hdr "8. stop gtun and gtund with SIGTERM"
fail=0
for name in gtun gtund; do
	lib_stop "$name" 10
	if [ "$STOP_RC" -eq 0 ]; then
		note "$name exited 0"
	else
		note "$name exited with status $STOP_RC (want 0)"
		fail=1
	fi
done
if ip -n "$PREFIX-vm" link show gtun0 >/dev/null 2>&1; then
	note "gtun0 still exists in $PREFIX-vm"
	fail=1
fi
if ip -n "$PREFIX-vm" route | grep -qE '^(10\.244\.0\.0/16|10\.96\.0\.0/12) '; then
	note "tunnel routes still in $PREFIX-vm:"
	ip -n "$PREFIX-vm" route | sed 's/^/    /'
	fail=1
fi
if ip -n "$PREFIX-gw" link show gtund0 >/dev/null 2>&1; then
	note "gtund0 still exists in $PREFIX-gw"
	fail=1
fi
if ip netns exec "$PREFIX-gw" nft list tables | grep -qw gtund; then
	note "nftables table gtund still exists in $PREFIX-gw"
	fail=1
fi
if ip netns exec "$PREFIX-vm" nft list tables | grep -qw gtun; then
	note "nftables table gtun still exists in $PREFIX-vm"
	fail=1
fi
[ $fail = 0 ] || die "daemons did not stop cleanly"
note "no gtun0, gtund0, routes or nftables tables left behind"

ok "demo OK"
note "The same on two real VMs: README.md, \"Quick start on two VMs\"; the manual is in docs/."
