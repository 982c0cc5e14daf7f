#!/usr/bin/env bash
# setup-node.sh makes the node of the e2e suite and the demo available, built from the Go
# module proxy and cached under bin/node/<versions>/, and prints that folder on the last line
# of standard output:
#   containerd, containerd-shim-runc-v2  (hack/node/containerd pins the version)
#   runc                                  (hack/node/runc; cgo, with libseccomp)
#   kubelet, kube-scheduler               (hack/envtest/kubernetes, the control plane's release)
#   cni/tap, cni/host-local, cni/loopback  (hack/node/cni)
#   pause                                 (hack/node/pause: the one program of the node's images)
# 8 minutes on 2 cores with an empty build cache (kubelet 336 s, containerd 107 s, the rest
# under 20 s each), less once make test has built the control plane; nothing afterwards.
#
# Environment:
#   LOCALBIN   the cache's root (default: bin/)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
version() { sed -n "s/^require ${1//\//\\/} v//p" "$ROOT/$2/go.mod"; }
CTD_VERSION=$(version github.com/containerd/containerd/v2 hack/node/containerd)
RUNC_VERSION=$(version github.com/opencontainers/runc hack/node/runc)
CNI_VERSION=$(version github.com/containernetworking/plugins hack/node/cni)
K8S_VERSION=$(version k8s.io/kubernetes hack/envtest/kubernetes)
BIN=${LOCALBIN:-$ROOT/bin}
DEST="$BIN/node/k8s-$K8S_VERSION-containerd-$CTD_VERSION-runc-$RUNC_VERSION-cni-$CNI_VERSION"

log() { echo "setup-node: $*" >&2; }

# build MODULE PACKAGE OUT [ENV...] builds into a temporary name and renames, so that an
# interrupted build never leaves a truncated binary that the cache check takes for a good one.
build() {
  local module=$1 pkg=$2 out=$3 start=$SECONDS
  shift 3
  if [ -x "$DEST/$out" ]; then return 0; fi
  mkdir -p "$(dirname "$DEST/$out")"
  log "building $out from $pkg (first time only)"
  (while sleep 30; do log "still building $out: $((SECONDS - start))s"; done) &
  local ticker=$!
  (cd "$ROOT/$module" && env CGO_ENABLED=0 "$@" go build -trimpath -ldflags "${LDFLAGS:--s -w}" ${TAGS:+-tags "$TAGS"} \
    -o "$DEST/$out.tmp" "$pkg") || { kill "$ticker" 2>/dev/null; exit 1; }
  kill "$ticker" 2>/dev/null || true
  mv "$DEST/$out.tmp" "$DEST/$out"
  log "built $out in $((SECONDS - start))s"
}

LDFLAGS="-s -w -X github.com/containerd/containerd/v2/version.Version=v$CTD_VERSION" \
  build hack/node/containerd github.com/containerd/containerd/v2/cmd/containerd containerd
build hack/node/containerd github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 containerd-shim-runc-v2
if [ ! -x "$DEST/runc" ]; then
  "$ROOT/hack/require-devel.sh" libseccomp libseccomp-dev libseccomp-devel "runc, the node's container runtime, needs libseccomp"
  LDFLAGS="-s -w -X main.version=$RUNC_VERSION" TAGS=seccomp build hack/node/runc github.com/opencontainers/runc runc CGO_ENABLED=1
fi
minor=$(echo "$K8S_VERSION" | cut -d. -f2)
vpkg=k8s.io/component-base/version
LDFLAGS="-s -w -X $vpkg.gitVersion=v$K8S_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor \
  -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z" \
  build hack/envtest/kubernetes k8s.io/kubernetes/cmd/kubelet kubelet
LDFLAGS="-s -w -X $vpkg.gitVersion=v$K8S_VERSION -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor \
  -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z" \
  build hack/envtest/kubernetes k8s.io/kubernetes/cmd/kube-scheduler kube-scheduler
for p in main/tap main/loopback ipam/host-local; do
  build hack/node/cni "github.com/containernetworking/plugins/plugins/$p" "cni/${p#*/}"
done
build . ./hack/node/pause pause
log "the node (Kubernetes v$K8S_VERSION, containerd v$CTD_VERSION, runc v$RUNC_VERSION, CNI plugins v$CNI_VERSION) is in $DEST"
echo "$DEST"
