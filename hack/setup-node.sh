#!/usr/bin/env bash
# setup-node.sh makes the container runtime of the e2e suite available: containerd, built
# from the Go module proxy (the module under hack/node/containerd, which pins its version), and
# prints its folder on the last line of standard output. About 3 minutes cold on 2 cores;
# cached under bin/node/containerd-<version>/ afterwards.
#
# Environment:
#   LOCALBIN   the cache's root (default: bin/)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERSION=$(sed -n 's/^require github.com\/containerd\/containerd\/v2 v//p' "$ROOT/hack/node/containerd/go.mod")
BIN=${LOCALBIN:-$ROOT/bin}
DEST="$BIN/node/containerd-$VERSION"

log() { echo "setup-node: $*" >&2; }

if [ ! -x "$DEST/containerd" ]; then
  mkdir -p "$DEST"
  start=$SECONDS
  log "building containerd v$VERSION from the Go module proxy (first time only; about 3 minutes)"
  (while sleep 30; do log "still building containerd: $((SECONDS - start))s"; done) &
  ticker=$!
  trap 'kill $ticker 2>/dev/null || true; rm -f "$DEST/.containerd.tmp"' EXIT
  # Without cgo: the btrfs snapshotter, which needs it, is left out; the tests use native.
  (cd "$ROOT/hack/node/containerd" && CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=v$VERSION" \
    -o "$DEST/.containerd.tmp" github.com/containerd/containerd/v2/cmd/containerd)
  mv "$DEST/.containerd.tmp" "$DEST/containerd"
  log "built containerd v$VERSION in $((SECONDS - start))s"
fi
echo "$DEST"
