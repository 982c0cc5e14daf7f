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

# shellcheck source=hack/lib/build.sh
. "$ROOT/hack/lib/build.sh"

cached_build "$ROOT/hack/node/containerd" github.com/containerd/containerd/v2/cmd/containerd containerd \
  "-s -w -X github.com/containerd/containerd/v2/version.Version=v$CTD_VERSION"
cached_build "$ROOT/hack/node/containerd" github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 containerd-shim-runc-v2 "-s -w"
if [ ! -x "$DEST/runc" ]; then
  "$ROOT/hack/require-devel.sh" libseccomp libseccomp-dev libseccomp-devel "runc, the node's container runtime, needs libseccomp"
  CGO_ENABLED=1 cached_build "$ROOT/hack/node/runc" github.com/opencontainers/runc runc "-s -w -X main.version=$RUNC_VERSION" -tags seccomp
fi
cached_build "$ROOT/hack/envtest/kubernetes" k8s.io/kubernetes/cmd/kubelet kubelet "$(k8s_ldflags "$K8S_VERSION")"
cached_build "$ROOT/hack/envtest/kubernetes" k8s.io/kubernetes/cmd/kube-scheduler kube-scheduler "$(k8s_ldflags "$K8S_VERSION")"
for p in main/tap main/loopback ipam/host-local; do
  cached_build "$ROOT/hack/node/cni" "github.com/containernetworking/plugins/plugins/$p" "cni/${p#*/}" "-s -w"
done
cached_build "$ROOT" ./hack/node/pause pause "-s -w"
log "the node (Kubernetes v$K8S_VERSION, containerd v$CTD_VERSION, runc v$RUNC_VERSION, CNI plugins v$CNI_VERSION) is in $DEST"
echo "$DEST"
