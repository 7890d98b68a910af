#!/usr/bin/env bash
# Removes what scripts/install.sh installed: the binaries, the man pages and
# the systemd units (stopping and disabling the services first on the live system).
# Configs and private keys stay, unless --purge, which also removes /etc/gtun,
# /etc/gtund and gtund's leases in /var/lib/gtund.
#
#   scripts/uninstall.sh [--client|--server|--both] [--purge]
#
# DESTDIR, PREFIX and UNITDIR as for install.sh. Idempotent: what is already
# gone is skipped.
set -euo pipefail

client=1 server=1 purge=0
for arg in "$@"; do
	case "$arg" in
	--client) client=1 server=0 ;;
	--server) client=0 server=1 ;;
	--both) client=1 server=1 ;;
	--purge) purge=1 ;;
	-h | --help)
		sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
		exit 2
		;;
	*)
		echo "uninstall.sh: unknown argument: $arg" >&2
		exit 2
		;;
	esac
done

DESTDIR="${DESTDIR:-}"
DESTDIR="${DESTDIR%/}"
PREFIX="${PREFIX:-/usr/local}"
if [ -z "${UNITDIR:-}" ]; then
	if [ -n "$DESTDIR" ]; then UNITDIR=/lib/systemd/system; else UNITDIR=/etc/systemd/system; fi
fi

live=0
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	live=1
fi

say() { printf '  %-9s %s\n' "$1" "$2"; }

remove() {
	if [ -e "$1" ] || [ -L "$1" ]; then
		rm -rf -- "$1"
		say removed "$1"
	fi
}

names=()
[ "$client" = 1 ] && names+=(gtun)
[ "$server" = 1 ] && names+=(gtund)

for name in "${names[@]}"; do
	units=("$name.service")
	if [ "$name" = gtun ]; then
		units+=("gtun@.service")
	fi
	if [ "$live" = 1 ]; then
		# Every running instance of the template too (gtun@hk.service, ...).
		running=()
		while read -r unit _; do
			running+=("$unit")
		done < <(systemctl list-units --plain --no-legend --all "$name.service" "$name@*.service" 2>/dev/null)
		if [ ${#running[@]} -gt 0 ]; then
			systemctl disable --now "${running[@]}" || true
		fi
		systemctl disable "$name.service" 2>/dev/null || true
	fi
	for u in "${units[@]}"; do
		remove "$DESTDIR$UNITDIR/$u"
	done
	remove "$DESTDIR$PREFIX/bin/$name"
	remove "$DESTDIR$PREFIX/share/man/man8/$name.8"
	remove "$DESTDIR$PREFIX/share/man/man5/$name.toml.5"
	if [ "$purge" = 1 ]; then
		remove "$DESTDIR/etc/$name"
		if [ "$name" = gtund ]; then
			remove "$DESTDIR/var/lib/gtund"
		fi
	elif [ -d "$DESTDIR/etc/$name" ]; then
		say kept "$DESTDIR/etc/$name/ (config and key; --purge removes them)"
	fi
done

if [ "$live" = 1 ]; then
	systemctl daemon-reload || echo "uninstall.sh: warning: systemctl daemon-reload failed" >&2
fi
