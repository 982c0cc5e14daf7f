#!/usr/bin/env bash
# setup-peers.sh builds the admission controllers make bench compares imagegate with,
# Gatekeeper and Kyverno, from the Go module proxy (the wrapper modules next to this script
# pin their versions), into bin/peers/, once. About 3 and 4 minutes cold on 2 cores.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEST="$ROOT/bin/peers"
mkdir -p "$DEST"
log() { echo "setup-peers: $*" >&2; }
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

build() {
  local name=$1 pkg=$2 start=$SECONDS
  local version
  version=$(sed -n 's/^require [^ ]* //p' "$ROOT/hack/bench/$name/go.mod")
  # The version is part of the cache key, so that changing the pin rebuilds.
  if [ -x "$DEST/$name-$version" ]; then
    ln -sf "$name-$version" "$DEST/$name"
    return 0
  fi
  log "building $name $version from $pkg (first time only)"
  (while sleep 30; do log "still building $name: $((SECONDS - start))s"; done) &
  local ticker=$!
  (cd "$ROOT/hack/bench/$name" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$DEST/.$name.tmp" "$pkg")
  kill "$ticker" 2>/dev/null || true
  mv "$DEST/.$name.tmp" "$DEST/$name-$version"
  ln -sf "$name-$version" "$DEST/$name"
  log "built $name $version in $((SECONDS - start))s"
}

build gatekeeper github.com/open-policy-agent/gatekeeper/v3
build kyverno github.com/kyverno/kyverno/cmd/kyverno
