#!/usr/bin/env bash
# Release tarballs: dist/gtun-VERSION-linux-ARCH.tar.gz for each ARCH, each
# holding gtun-VERSION-linux-ARCH/{bin/gtun, bin/gtund, docs/*.md (the
# manual), docs/man/ (the rendered man pages), etc/, systemd/, scripts/install.sh,
# scripts/uninstall.sh, README.md, LICENSE}, and
# dist/SHA256SUMS over them.
#
#   scripts/dist.sh           build them (make dist)
#   scripts/dist.sh --check   build them twice, the second time from a copy of
#                             the tree at another path with an empty Go build
#                             cache, and fail unless both SHA256SUMS match
#                             (make dist-check)
#
# Reproducible: the same source gives the same bytes. Go builds with
# -trimpath, -buildvcs=false, CGO_ENABLED=0 and fixed -ldflags; tar sorts
# names, sets every mtime to the commit time, owner and group to 0 and
# normalises modes; gzip -n stores no name or time.
#
# Environment: VERSION (default `git describe --tags --always --dirty`),
# COMMIT (default `git rev-parse --short HEAD`), SOURCE_DATE_EPOCH (default
# the commit time), ARCHES (default "amd64 arm64"), DISTDIR (default dist),
# GO (default go).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
GO="${GO:-go}"
VERSION="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
COMMIT="${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
ARCHES="${ARCHES:-amd64 arm64}"
DISTDIR="${DISTDIR:-dist}"
export VERSION COMMIT SOURCE_DATE_EPOCH ARCHES GO

case "$VERSION$COMMIT" in
*[!A-Za-z0-9._+-]*)
	echo "dist.sh: VERSION and COMMIT may hold only letters, digits and . _ + - (got $VERSION, $COMMIT)" >&2
	exit 2
	;;
esac

if [ "${1:-}" = "--check" ]; then
	tmp="$(mktemp -d)"
	trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
	# First a copy of the files (tracked and new, as git sees them) at
	# another path, so both builds see the same sources.
	mkdir "$tmp/src"
	git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
		[ -e "$f" ] && cp -a --parents "$f" "$tmp/src/"
	done
	DISTDIR="$tmp/a" "$0"
	DISTDIR="$tmp/b" GOCACHE="$tmp/gocache" "$tmp/src/scripts/dist.sh"
	if ! cmp -s "$tmp/a/SHA256SUMS" "$tmp/b/SHA256SUMS"; then
		echo "dist.sh --check: NOT reproducible:" >&2
		diff "$tmp/a/SHA256SUMS" "$tmp/b/SHA256SUMS" >&2 || true
		for t in "$tmp"/a/*.tar.gz; do
			n="$(basename "$t")"
			mkdir -p "$tmp/xa/$n" "$tmp/xb/$n"
			tar -xzf "$t" -C "$tmp/xa/$n"
			tar -xzf "$tmp/b/$n" -C "$tmp/xb/$n"
		done
		diff -r --brief "$tmp/xa" "$tmp/xb" >&2 || true
		exit 1
	fi
	echo "dist.sh --check: reproducible, built twice (the second from $tmp/src with an empty build cache):"
	cat "$tmp/a/SHA256SUMS"
	exit 0
fi

ldflags="-s -w -X github.com/gtun/gtun/pkg/cli.Version=$VERSION -X github.com/gtun/gtun/pkg/cli.Commit=$COMMIT"
mkdir -p "$DISTDIR"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT

tarballs=()
for arch in $ARCHES; do
	name="gtun-$VERSION-linux-$arch"
	dir="$stage/$name"
	mkdir -p "$dir/bin" "$dir/docs/man" "$dir/docs/grafana" "$dir/etc" "$dir/systemd" "$dir/scripts" "$dir/bench"
	for b in gtun gtund; do
		CGO_ENABLED=0 GOOS=linux GOARCH="$arch" "$GO" build -trimpath -buildvcs=false \
			-ldflags "$ldflags" -o "$dir/bin/$b" "./$b"
	done
	cp docs/*.md "$dir/docs/"
	cp docs/man/gtun.8 docs/man/gtund.8 docs/man/gtun.toml.5 docs/man/gtund.toml.5 "$dir/docs/man/"
	cp docs/grafana/gtun.json "$dir/docs/grafana/" # the dashboard the operations page imports
	cp etc/gtun.toml etc/gtund.toml "$dir/etc/"
	cp systemd/gtun.service systemd/gtun@.service systemd/gtund.service "$dir/systemd/"
	cp scripts/install.sh scripts/uninstall.sh "$dir/scripts/"
	cp README.md LICENSE "$dir/"
	cp bench/RESULTS.md "$dir/bench/" # the dated runs the manual's performance page links to
	# Modes from here, not from the builder's umask or checkout.
	find "$dir" -type d -exec chmod 0755 {} +
	find "$dir" -type f -exec chmod 0644 {} +
	chmod 0755 "$dir"/bin/* "$dir"/scripts/*
	tar --create --format=gnu --sort=name --mtime="@$SOURCE_DATE_EPOCH" \
		--owner=0 --group=0 --numeric-owner -C "$stage" "$name" |
		gzip -n -9 >"$DISTDIR/$name.tar.gz"
	tarballs+=("$name.tar.gz")
	echo "dist.sh: $DISTDIR/$name.tar.gz"
done
(cd "$DISTDIR" && sha256sum "${tarballs[@]}" >SHA256SUMS)
echo "dist.sh: $DISTDIR/SHA256SUMS"
