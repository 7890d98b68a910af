#!/usr/bin/env bash
# Debian packages: dist/gtun_VERSION_ARCH.deb and dist/gtund_VERSION_ARCH.deb
# for each ARCH, built with dpkg-deb from the release tarballs of
# scripts/dist.sh (make deb runs make dist first), so a package holds the
# same binaries as the tarball. Each package is what scripts/install.sh
# stages with PREFIX=/usr --no-keys for its role:
#
#   /usr/bin/NAME, /lib/systemd/system/NAME.service (and gtun@.service),
#   /usr/share/man/man8/NAME.8.gz, /usr/share/man/man5/NAME.toml.5.gz,
#   /etc/NAME/NAME.toml (a conffile, 0600 in a 0700 directory),
#   /usr/share/doc/NAME/{copyright, changelog.gz, examples/NAME.toml,
#     README.md, docs/*.md, docs/grafana/gtun.json, bench/RESULTS.md,
#     etc/{gtun,gtund}.toml; LICENSE -> copyright, docs/man -> /usr/share/man}
#     (the manual, its links holding as in the tarball),
#   /usr/share/lintian/overrides/NAME (packaging/deb/lintian-overrides)
#
# and packaging/deb/{postinst,prerm,postrm}: the postinst makes a private
# key only when none exists and never starts the service (the config is an
# example until edited: then `systemctl enable --now NAME`).
#
# Environment: VERSION, COMMIT, SOURCE_DATE_EPOCH, ARCHES, DISTDIR as for
# dist.sh (the tarballs are read from DISTDIR); DEB_VERSION (default
# VERSION made a Debian version: a leading "v" dropped, "-" and "_" become
# "+", and "0~" before one that does not start with a digit, so that
# `git describe` output such as 1.2.0-3-gabcdef becomes 1.2.0+3+gabcdef);
# MAINTAINER.
#
# Reproducible like the tarballs: every file's mtime is SOURCE_DATE_EPOCH,
# owner root:root (--root-owner-group), fixed modes.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
VERSION="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
COMMIT="${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
ARCHES="${ARCHES:-amd64 arm64}"
DISTDIR="${DISTDIR:-dist}"
MAINTAINER="${MAINTAINER:-gtun maintainers <gtun@users.noreply.github.com>}"
export SOURCE_DATE_EPOCH

if [ -z "${DEB_VERSION:-}" ]; then
	DEB_VERSION="${VERSION#v}"
	DEB_VERSION="${DEB_VERSION//[-_]/+}"
	case "$DEB_VERSION" in
	[0-9]*) ;;
	*) DEB_VERSION="0~$DEB_VERSION" ;;
	esac
fi
case "$DEB_VERSION" in
[0-9]*[!A-Za-z0-9.+~]* | [!0-9]*)
	echo "deb.sh: DEB_VERSION $DEB_VERSION is not a Debian version (digits first, then letters, digits and . + ~)" >&2
	exit 2
	;;
esac
command -v dpkg-deb >/dev/null || {
	echo "deb.sh: needs dpkg-deb (package dpkg)" >&2
	exit 1
}

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
umask 022

# describe NAME: the package's one-line and long description.
describe() {
	case "$1" in
	gtun) cat <<'TXT'
Description: client of an encrypted layer-3 tunnel to remote cluster networks
 gtun connects to gtund servers and routes the pod and Service CIDRs of
 their Kubernetes clusters through a TUN device, keeping the routes in
 place across reconnects. In gateway mode it forwards for the other hosts
 of its VPC. Edit /etc/gtun/gtun.toml, then: systemctl enable --now gtun
TXT
		;;
	gtund) cat <<'TXT'
Description: server of an encrypted layer-3 tunnel into a cluster network
 gtund runs on a host with a public address in a Kubernetes cluster's VPC.
 It authenticates gtun clients by their keys, gives them tunnel addresses,
 pushes the cluster's CIDRs and masquerades their traffic into the cluster
 network. Edit /etc/gtund/gtund.toml, then: systemctl enable --now gtund
TXT
		;;
	esac
}

debs=()
for arch in $ARCHES; do
	tarball="$DISTDIR/gtun-$VERSION-linux-$arch.tar.gz"
	if [ ! -f "$tarball" ]; then
		echo "deb.sh: $tarball is missing: run make dist (or scripts/dist.sh) first" >&2
		exit 1
	fi
	tree="$stage/tree-$arch"
	mkdir -p "$tree"
	tar -xzf "$tarball" -C "$tree" --strip-components=1
	for name in gtun gtund; do
		role=--client
		[ "$name" = gtund ] && role=--server
		pkg="$stage/$name-$arch"
		DESTDIR="$pkg" PREFIX=/usr UNITDIR=/lib/systemd/system "$tree/scripts/install.sh" "$role" --no-keys >/dev/null
		gzip -9n "$pkg"/usr/share/man/man*/*
		doc="$pkg/usr/share/doc/$name"
		install -d -m 0755 "$doc/examples"
		install -m 0644 "$tree/etc/$name.toml" "$doc/examples/$name.toml"
		# The manual, laid out as in the tarball so that its relative links
		# (README.md to docs/, docs/ to bench/RESULTS.md and the Grafana
		# dashboard) hold.
		install -m 0644 "$tree/README.md" "$doc/README.md"
		install -d -m 0755 "$doc/docs/grafana" "$doc/bench"
		install -m 0644 "$tree"/docs/*.md "$doc/docs/"
		install -m 0644 "$tree/docs/grafana/gtun.json" "$doc/docs/grafana/gtun.json"
		install -m 0644 "$tree/bench/RESULTS.md" "$doc/bench/RESULTS.md"
		install -d -m 0755 "$doc/etc"
		install -m 0644 "$tree/etc/gtun.toml" "$tree/etc/gtund.toml" "$doc/etc/"
		ln -s copyright "$doc/LICENSE"    # the license is in Debian's copyright file
		ln -s ../../../man "$doc/docs/man" # the man pages are where man finds them
		{
			echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
			echo "Upstream-Name: gtun"
			echo "Source: https://github.com/gtun/gtun"
			echo
			echo "Files: *"
			echo "License: MIT"
			sed -e 's/^$/./' -e 's/^/ /' "$tree/LICENSE"
		} >"$doc/copyright"
		printf '%s (%s) unstable; urgency=medium\n\n  * Release %s (commit %s).\n\n -- %s  %s\n' \
			"$name" "$DEB_VERSION" "$VERSION" "$COMMIT" "$MAINTAINER" \
			"$(date -u -R -d "@$SOURCE_DATE_EPOCH")" | gzip -9n >"$doc/changelog.gz"
		chmod 0644 "$doc/copyright" "$doc/changelog.gz"
		install -D -m 0644 /dev/stdin "$pkg/usr/share/lintian/overrides/$name" < <(sed "s/@NAME@/$name/g" packaging/deb/lintian-overrides)

		install -d -m 0755 "$pkg/DEBIAN"
		for script in postinst prerm postrm; do
			sed "s/@NAME@/$name/g" "packaging/deb/$script" >"$pkg/DEBIAN/$script"
			chmod 0755 "$pkg/DEBIAN/$script"
		done
		echo "/etc/$name/$name.toml" >"$pkg/DEBIAN/conffiles"
		(cd "$pkg" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$pkg/DEBIAN/md5sums"
		size="$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)"
		{
			echo "Package: $name"
			echo "Version: $DEB_VERSION"
			echo "Architecture: $arch"
			echo "Maintainer: $MAINTAINER"
			echo "Installed-Size: $size"
			echo "Section: net"
			echo "Priority: optional"
			echo "Homepage: https://github.com/gtun/gtun"
			describe "$name"
		} >"$pkg/DEBIAN/control"
		chmod 0644 "$pkg/DEBIAN/control" "$pkg/DEBIAN/conffiles" "$pkg/DEBIAN/md5sums"
		find "$pkg" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
		out="$DISTDIR/${name}_${DEB_VERSION}_$arch.deb"
		dpkg-deb --root-owner-group -Zxz --build "$pkg" "$out" >/dev/null
		debs+=("$out")
		echo "deb.sh: $out"
	done
done
