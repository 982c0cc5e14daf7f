#!/usr/bin/env bash
# Fails when a go.mod of the project asks for a Go newer than the 1.26 line the project is
# built with. The sigstore libraries pinned in go.mod (cosign v3.1.3, sigstore-go v1.3.0,
# sigstore v1.10.11, go-containerregistry v0.22.1) are the newest that build on Go 1.26;
# their next versions need Go 1.27, and `go get -u` would drag the go line up with them.
set -euo pipefail
cd "$(dirname "$0")/.."
max_minor=26
status=0
for mod in go.mod test/bench/go.mod; do
	[ -f "$mod" ] || continue
	line=$(awk '$1 == "go" { print $2; exit }' "$mod")
	minor=$(echo "$line" | cut -d. -f2)
	if [ -z "$minor" ] || [ "$minor" -gt "$max_minor" ]; then
		echo "$mod: go $line: the project builds with Go 1.$max_minor; an upgrade (of sigstore, cosign, go-containerregistry?) raised the go line: keep the versions this script names." >&2
		status=1
	fi
	if grep -q '^toolchain' "$mod"; then
		echo "$mod: a toolchain line makes the go command fetch another Go; the project builds with Go 1.$max_minor" >&2
		status=1
	fi
done
exit $status
