#!/usr/bin/env bash
# setup-envtest.sh makes kube-apiserver, etcd, kubectl and kube-controller-manager of one
# pinned Kubernetes release available without downloading release binaries, and prints the
# folder to use as KUBEBUILDER_ASSETS on its last line of standard output.
#
# Order: an existing KUBEBUILDER_ASSETS that holds the binaries; the cache under
# bin/k8s/<version>/; else a build from the Go module proxy (the modules under
# hack/envtest/). The build takes about 10 minutes cold on 2 cores; progress goes to stderr.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The versions are those the build modules pin; change them there (and run go mod tidy).
K8S_VERSION=$(sed -n 's/^require k8s.io\/kubernetes v//p' "$ROOT/hack/envtest/kubernetes/go.mod")
ETCD_VERSION=$(sed -n 's/^require go.etcd.io\/etcd\/server\/v3 v//p' "$ROOT/hack/envtest/etcd/go.mod")
DEST="$ROOT/bin/k8s/$K8S_VERSION"
# envtest needs the first three; the local control plane also runs the controller-manager.
ENVTEST_BINARIES=(kube-apiserver etcd kubectl)
BINARIES=("${ENVTEST_BINARIES[@]}" kube-controller-manager)

log() { echo "setup-envtest: $*" >&2; }

has_all() {
  local dir=$1 b
  shift
  for b in "$@"; do
    [ -x "$dir/$b" ] || return 1
  done
}

# The demo, the e2e suite and the bench also run kube-controller-manager (--with-controller-manager),
# which envtest's own release does not ship.
REQUIRED=("${ENVTEST_BINARIES[@]}")
if [ "${1:-}" = "--with-controller-manager" ]; then
  REQUIRED+=(kube-controller-manager)
fi
if [ -n "${KUBEBUILDER_ASSETS:-}" ] && has_all "$KUBEBUILDER_ASSETS" "${REQUIRED[@]}"; then
  log "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi
if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks one of ${REQUIRED[*]}; using $DEST instead"
fi
if has_all "$DEST" "${BINARIES[@]}"; then
  echo "$DEST"
  exit 0
fi

mkdir -p "$DEST"
# A failed build exits through set -e: stop the progress ticker with it.
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
# Build into a temporary name and rename, so that an interrupted build never leaves a
# truncated binary that the cache check above would take for a good one.
build() {
  local module=$1 pkg=$2 out=$3 ldflags=$4 start=$SECONDS
  if [ -x "$DEST/$out" ]; then return 0; fi
  log "building $out from $pkg (first time only; kube-apiserver takes about 10 minutes)"
  # A progress line every 30 seconds, so a first run does not look hung.
  (while sleep 30; do log "still building $out: $((SECONDS - start))s"; done) &
  local ticker=$!
  (cd "$ROOT/hack/envtest/$module" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$DEST/.$out.tmp" "$pkg")
  kill "$ticker" 2>/dev/null || true
  mv "$DEST/.$out.tmp" "$DEST/$out"
  log "built $out in $((SECONDS - start))s"
}

minor=$(echo "$K8S_VERSION" | cut -d. -f2)
vpkg=k8s.io/component-base/version
k8s_ldflags="-s -w -X $vpkg.gitVersion=v$K8S_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor \
  -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z \
  -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION"

build etcd go.etcd.io/etcd/server/v3 etcd "-s -w"
build kubernetes k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver "$k8s_ldflags"
build kubernetes k8s.io/kubernetes/cmd/kubectl kubectl "$k8s_ldflags"
build kubernetes k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager "$k8s_ldflags"
log "etcd v$ETCD_VERSION and Kubernetes v$K8S_VERSION ready in $DEST"
echo "$DEST"
