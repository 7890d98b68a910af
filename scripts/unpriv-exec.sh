#!/bin/sh
# go test -exec helper for `make unit`: runs a test binary without root.
#
#   go test -exec "$PWD/scripts/unpriv-exec.sh" ./pkg/...
#
# As root it drops to UNIT_USER (default nobody) with setpriv; as anyone
# else it runs the binary as it is. The go command (which may run as root
# and keeps its test binaries in a private directory) builds; only the
# tests run unprivileged, so a test that silently needs root cannot pass
# here. The unprivileged user gets UNIT_HOME (HOME, GOCACHE, GOMODCACHE:
# a test that runs the go command needs them), kept between runs.
set -eu

bin=$1
shift
if [ "$(id -u)" -ne 0 ]; then
	exec "$bin" "$@"
fi
if ! command -v setpriv >/dev/null 2>&1; then
	echo "unpriv-exec.sh: setpriv (util-linux) is needed to run tests without root" >&2
	exit 1
fi
user=${UNIT_USER:-nobody}
home=${UNIT_HOME:-/tmp/gtun-unit-home}
mkdir -p "$home"
chown "$user" "$home"
chmod 0700 "$home"

# The binary's directory is root's and private: copy it where the user can
# run it, for this run only.
dir=$(mktemp -d /tmp/gtun-unit-bin.XXXXXX)
trap 'rm -rf "$dir"' EXIT INT TERM
cp "$bin" "$dir/"
chmod 0755 "$dir" "$dir/$(basename "$bin")"

# Not exec: the trap removes the copy afterwards. The test's working
# directory (its package's source) stays; it is world-readable.
rc=0
setpriv --reuid="$user" --regid="$(id -g "$user")" --clear-groups --inh-caps=-all \
	env HOME="$home" GOCACHE="$home/gocache" GOMODCACHE="$home/gomod" TMPDIR=/tmp \
	"$dir/$(basename "$bin")" "$@" || rc=$?
exit $rc
