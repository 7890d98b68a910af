#!/usr/bin/env bash
# Lists the modules of go.mod (direct, indirect and tools) that have a newer
# release than the version go.mod requires, as the Go module proxy knows
# them: MODULE, REQUIRED, LATEST and whether gtun imports it directly. It
# changes nothing (upgrading is a separate, reviewed step: go get
# MODULE@VERSION, then make test). Exit 0 whether or not there are updates,
# 1 when the proxy cannot be asked.
#
#   scripts/deps-check.sh          (make deps-check)
set -euo pipefail
cd "$(dirname "$0")/.."
GO="${GO:-go}"

# The requirements of go.mod itself (its require lines and blocks), not
# the whole module graph.
mapfile -t mods < <(awk '/^require \(/ { b = 1; next } b && /^\)/ { b = 0 } b && NF { print $1 } /^require [^(]/ { print $2 }' go.mod)
if [ ${#mods[@]} -eq 0 ]; then
	echo "deps-check: go.mod requires no modules"
	exit 0
fi
out="$("$GO" list -m -u -f '{{if .Update}}{{.Path}}	{{.Version}}	{{.Update.Version}}	{{if .Indirect}}indirect{{else}}direct{{end}}{{end}}' "${mods[@]}")" || {
	echo "deps-check: go list -m -u failed (is the module proxy reachable?)" >&2
	exit 1
}
if [ -z "$out" ]; then
	echo "deps-check: all ${#mods[@]} modules of go.mod are at their latest release"
	exit 0
fi
n="$(printf '%s\n' "$out" | wc -l)"
{
	printf 'MODULE\tREQUIRED\tLATEST\tUSE\n'
	printf '%s\n' "$out" | sort -t'	' -k4,4 -k1,1
} | column -t -s'	'
echo "deps-check: $n of ${#mods[@]} modules of go.mod have newer releases"
