#!/usr/bin/env bash
# Installs gtun and/or gtund: binaries, man pages, systemd units, an example
# config and a private key (only where the operator has none), from a source
# tree or an unpacked release tarball (`make dist`).
#
#   scripts/install.sh [--client|--server|--both] [--enable] [--no-keys]
#
#   --client   gtun: bin/gtun, gtun(8), gtun.toml(5), gtun.service,
#              gtun@.service, /etc/gtun
#   --server   gtund: bin/gtund, gtund(8), gtund.toml(5), gtund.service,
#              /etc/gtund
#   --both     both (the default)
#   --enable   also `systemctl enable --now` the service(s); only on the live
#              system (DESTDIR empty) and only when systemd is running
#   --no-keys  make no private key (packaging: the package's postinst makes
#              it on the machine it is installed on)
#
# Environment:
#   DESTDIR    staging root for packaging (default empty: the live system)
#   PREFIX     where bin/ and share/man/ go (default /usr/local); the units'
#              ExecStart follows it
#   UNITDIR    where the units go (default /etc/systemd/system, or
#              /lib/systemd/system when DESTDIR is set, as packages do)
#
# Idempotent: a second run changes nothing. Binaries and units are replaced
# when they differ (atomically, so a running daemon is not disturbed; restart
# it to run the new binary). Configs and keys are never overwritten: an
# operator's /etc/gtun/gtun.toml stays as it is. A missing key is generated
# with mode 0600 by the installed binary's `genkey`, and its public key printed.
set -euo pipefail

usage() {
	sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
	exit 2
}

client=1 server=1 enable=0 keys=1
for arg in "$@"; do
	case "$arg" in
	--client) client=1 server=0 ;;
	--server) client=0 server=1 ;;
	--both) client=1 server=1 ;;
	--enable) enable=1 ;;
	--no-keys) keys=0 ;;
	-h | --help) usage ;;
	*)
		echo "install.sh: unknown argument: $arg" >&2
		usage
		;;
	esac
done

src="$(cd "$(dirname "$0")/.." && pwd)"
DESTDIR="${DESTDIR:-}"
DESTDIR="${DESTDIR%/}"
PREFIX="${PREFIX:-/usr/local}"
if [ -z "${UNITDIR:-}" ]; then
	if [ -n "$DESTDIR" ]; then UNITDIR=/lib/systemd/system; else UNITDIR=/etc/systemd/system; fi
fi
case "$PREFIX$UNITDIR" in
*[[:space:]]*)
	echo "install.sh: PREFIX and UNITDIR must not contain spaces" >&2
	exit 2
	;;
esac
umask 022
if [ -z "$DESTDIR" ] && [ "$(id -u)" -ne 0 ]; then
	echo "install.sh: installing into this system needs root (or set DESTDIR to stage into a directory)" >&2
	exit 1
fi

say() { printf '  %-9s %s\n' "$1" "$2"; }

# The binaries come from bin/ (make build, or the release tarball). In a
# source tree without them, build them; elsewhere say what is missing.
bins=()
[ "$client" = 1 ] && bins+=(gtun)
[ "$server" = 1 ] && bins+=(gtund)
need_build=0
for b in "${bins[@]}"; do
	[ -x "$src/bin/$b" ] || need_build=1
done
if [ "$need_build" = 1 ]; then
	if [ -f "$src/go.mod" ] && [ -f "$src/Makefile" ] && command -v go >/dev/null 2>&1; then
		echo "install.sh: bin/ has no ${bins[*]}: running make build" >&2
		make -C "$src" build >&2
	else
		echo "install.sh: $src/bin/ lacks ${bins[*]} and cannot build them here (needs the source tree and Go);" >&2
		echo "  run \`make build\` first, or use a release tarball from \`make dist\`" >&2
		exit 1
	fi
fi

# install_file SRC DST MODE: copies SRC to DST unless DST has the same bytes
# and mode already. The copy lands next to DST and is renamed over it, so a
# running binary is never written into.
install_file() {
	local srcf="$1" dst="$2" mode="$3"
	if [ -f "$dst" ] && cmp -s "$srcf" "$dst" && [ "$(stat -c %a "$dst")" = "${mode#0}" ]; then
		say unchanged "$dst"
		last=unchanged
		return
	fi
	local verb=installed
	[ -e "$dst" ] && verb=updated
	last=$verb
	# Only a missing directory is created: an existing one keeps its mode.
	[ -d "$(dirname "$dst")" ] || install -d -m 0755 "$(dirname "$dst")"
	local tmp
	tmp="$(mktemp "$dst.XXXXXX")"
	install -m "$mode" "$srcf" "$tmp"
	mv -f "$tmp" "$dst"
	say "$verb" "$dst"
	changed=1
}

# install_unit NAME: the unit with ExecStart pointing at $PREFIX/bin.
install_unit() {
	local tmp
	tmp="$(mktemp)"
	sed -e "s|^ExecStart=/usr/local/bin/|ExecStart=$PREFIX/bin/|" "$src/systemd/$1" >"$tmp"
	install_file "$tmp" "$DESTDIR$UNITDIR/$1" 0644
	rm -f "$tmp"
}

# install_man NAME: the man pages of NAME (NAME(8), NAME.toml(5)).
install_man() {
	install_file "$src/docs/man/$1.8" "$DESTDIR$PREFIX/share/man/man8/$1.8" 0644
	install_file "$src/docs/man/$1.toml.5" "$DESTDIR$PREFIX/share/man/man5/$1.toml.5" 0644
}

# setup_etc NAME: /etc/NAME (0700) with NAME.toml and private.key, each only
# if absent.
setup_etc() {
	local name="$1" dir="$DESTDIR/etc/$1"
	if [ -d "$dir" ]; then
		say kept "$dir/"
	else
		install -d -m 0700 "$dir"
		say created "$dir/"
		changed=1
	fi
	if [ -e "$dir/$name.toml" ]; then
		say kept "$dir/$name.toml"
	else
		install -m 0600 "$src/etc/$name.toml" "$dir/$name.toml"
		say installed "$dir/$name.toml (example: edit it)"
		changed=1
	fi
	local key="$dir/private.key" bin="$DESTDIR$PREFIX/bin/$name"
	if [ "$keys" = 0 ]; then
		return
	fi
	if [ -e "$key" ]; then
		say kept "$key"
		case "$(stat -c %a "$key")" in
		600 | 400) ;;
		*) echo "install.sh: warning: $key has mode $(stat -c %a "$key"); $name refuses a key others can read: chmod 600 $key" >&2 ;;
		esac
	else
		(
			umask 077
			tmp="$(mktemp "$key.XXXXXX")"
			if ! "$bin" genkey >"$tmp"; then
				rm -f "$tmp"
				echo "install.sh: $bin genkey failed (a binary for another architecture?)" >&2
				exit 1
			fi
			chmod 0600 "$tmp"
			mv -f "$tmp" "$key"
		)
		say generated "$key (mode 0600)"
		changed=1
	fi
	local pub
	if pub="$("$bin" pubkey <"$key")"; then
		pubkeys+=("$name public key: $pub")
	else
		echo "install.sh: $key is not a valid private key" >&2
		exit 1
	fi
}

changed=0 last='' pubkeys=()
echo "install.sh: installing ${bins[*]} into ${DESTDIR:-/} (PREFIX=$PREFIX, units in $UNITDIR)"
updated_bins=()
for b in "${bins[@]}"; do
	install_file "$src/bin/$b" "$DESTDIR$PREFIX/bin/$b" 0755
	if [ "$last" = updated ]; then
		updated_bins+=("$b")
	fi
done
units=()
for b in "${bins[@]}"; do
	install_man "$b"
done
if [ "$client" = 1 ]; then
	install_unit gtun.service
	install_unit gtun@.service
	setup_etc gtun
	units+=(gtun.service)
fi
if [ "$server" = 1 ]; then
	install_unit gtund.service
	setup_etc gtund
	units+=(gtund.service)
fi

if [ ${#pubkeys[@]} -gt 0 ]; then
	printf '%s\n' "${pubkeys[@]}"
fi

live=0
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	live=1
fi
if [ "$live" = 1 ]; then
	# Changed unit files take effect (and systemd stops warning about them)
	# only after a reload.
	if ! systemctl daemon-reload; then
		echo "install.sh: warning: systemctl daemon-reload failed; run it before starting the services" >&2
	fi
fi
# example_config UNIT: true when the unit's config is still the example
# (its keys and endpoints are placeholders: starting it helps nobody).
example_config() {
	local name="${1%.service}"
	cmp -s "$src/etc/$name.toml" "$DESTDIR/etc/$name/$name.toml"
}

if [ "$enable" = 1 ]; then
	if [ -n "$DESTDIR" ]; then
		echo "install.sh: --enable ignored: DESTDIR is set (a staging root, not this system)" >&2
	elif [ "$live" = 0 ]; then
		echo "install.sh: --enable ignored: systemd is not running here" >&2
	else
		for u in "${units[@]}"; do
			if example_config "$u"; then
				echo "install.sh: not enabling $u: /etc/${u%.service}/${u%.service}.toml is still the example; edit it, then: systemctl enable --now $u" >&2
				continue
			fi
			systemctl enable --now "$u"
			echo "install.sh: enabled and started $u"
		done
	fi
else
	echo "install.sh: next: edit the config(s), then: systemctl enable --now ${units[*]}"
fi
if [ "$live" = 1 ] && [ ${#updated_bins[@]} -gt 0 ]; then
	for b in "${updated_bins[@]}"; do
		if systemctl is-active --quiet "$b.service"; then
			echo "install.sh: $b.service runs the old binary: systemctl restart $b"
		fi
	done
fi
if [ "$changed" = 0 ]; then
	echo "install.sh: nothing changed"
fi
