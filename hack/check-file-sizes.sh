#!/usr/bin/env bash
# Fails when a file tracked by git is larger than 1 MiB, naming it: build outputs and
# downloaded binaries do not belong in the repository (make build writes them to bin/).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
limit=$((1 << 20))
status=0
while IFS= read -r -d '' f; do
	[ -f "$f" ] || continue
	size=$(stat -c %s "$f")
	if [ "$size" -gt "$limit" ]; then
		echo "check-file-sizes: $f is $size bytes, over the 1 MiB limit for tracked files; build outputs belong in bin/ (git rm --cached $f)"
		status=1
	fi
done < <(git ls-files -z)
exit $status
