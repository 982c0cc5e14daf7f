#!/usr/bin/env bash
# setup-envtest.sh makes kube-apiserver, etcd, kubectl and kube-controller-manager of one
# pinned Kubernetes release available, and prints the folder to use as KUBEBUILDER_ASSETS on
# its last line of standard output.
#
# Order: an existing KUBEBUILDER_ASSETS that holds the binaries; the cache under
# bin/k8s/<version>/; a download the ecosystem's way (controller-runtime's setup-envtest
# fetching the envtest release of that version, and the release binary of
# kube-controller-manager from dl.k8s.io, checked against its published sha256); else a build
# from the Go module proxy (the modules under hack/envtest/), about 10 minutes cold on 2 cores.
# Where nothing can be downloaded, one request to the index, bounded by a 3-second connect
# timeout and ENVTEST_DOWNLOAD_TIMEOUT seconds in all (default 5), decides it and the build
# starts; progress goes to stderr.
#
# Environment:
#   ENVTEST_DOWNLOAD=never     skip the download and build
#   ENVTEST_BUILD=never        fail instead of building (for CI that must not spend the time)
#   ENVTEST_INDEX_URL          setup-envtest's index (default: controller-tools' envtest-releases.yaml)
#   K8S_RELEASE_URL            Kubernetes release binaries (default: https://dl.k8s.io/release)
#   LOCALBIN                   the cache's root (default: bin/)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The versions are those the build modules pin; change them there (and run go mod tidy).
K8S_VERSION=$(sed -n 's/^require k8s.io\/kubernetes v//p' "$ROOT/hack/envtest/kubernetes/go.mod")
ETCD_VERSION=$(sed -n 's/^require go.etcd.io\/etcd\/server\/v3 v//p' "$ROOT/hack/envtest/etcd/go.mod")
BIN=${LOCALBIN:-$ROOT/bin}
DEST="$BIN/k8s/$K8S_VERSION"
# setup-envtest, built from the Go module proxy when a download is possible.
SETUP_ENVTEST_VERSION=v0.25.1
ENVTEST_INDEX_URL=${ENVTEST_INDEX_URL:-https://raw.githubusercontent.com/kubernetes-sigs/controller-tools/HEAD/envtest-releases.yaml}
K8S_RELEASE_URL=${K8S_RELEASE_URL:-https://dl.k8s.io/release}
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
TMP=$(mktemp -d)
# A failed build exits through set -e: stop the progress ticker with it.
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$TMP"' EXIT

GOOS=$(go env GOOS)
GOARCH=$(go env GOARCH)

# download tries the ecosystem's way; it returns non-zero, leaving what it got in $DEST, when
# it cannot get everything, and the build makes the rest.
download() {
  if [ "${ENVTEST_DOWNLOAD:-}" = never ]; then
    log "ENVTEST_DOWNLOAD=never: not downloading"
    return 1
  fi
  # One short request says whether downloads work here at all.
  if ! curl -fsS --connect-timeout 3 --max-time "${ENVTEST_DOWNLOAD_TIMEOUT:-5}" -o "$TMP/index.yaml" "$ENVTEST_INDEX_URL" 2>"$TMP/curl.err"; then
    log "no download ($ENVTEST_INDEX_URL: $(tr -d '\n' <"$TMP/curl.err")); building from the Go module proxy instead"
    return 1
  fi
  if ! has_all "$DEST" "${ENVTEST_BINARIES[@]}"; then
    local tool="$BIN/setup-envtest-$SETUP_ENVTEST_VERSION"
    if [ ! -x "$tool" ]; then
      log "building setup-envtest $SETUP_ENVTEST_VERSION from the Go module proxy"
      GOBIN="$TMP/gobin" go install "sigs.k8s.io/controller-runtime/tools/setup-envtest@$SETUP_ENVTEST_VERSION" >&2 || return 1
      mv "$TMP/gobin/setup-envtest" "$tool"
    fi
    local dir
    if ! dir=$("$tool" use "$K8S_VERSION" --bin-dir "$TMP/envtest" --index "$ENVTEST_INDEX_URL" -p path 2>"$TMP/setup-envtest.err" </dev/null); then
      log "setup-envtest could not download envtest $K8S_VERSION: $(tail -n 3 "$TMP/setup-envtest.err" | tr '\n' ' ')"
      return 1
    fi
    local b
    for b in "${ENVTEST_BINARIES[@]}"; do
      [ -x "$dir/$b" ] || { log "the envtest release lacks $b"; return 1; }
      cp "$dir/$b" "$DEST/.$b.tmp" && mv "$DEST/.$b.tmp" "$DEST/$b"
    done
    log "downloaded ${ENVTEST_BINARIES[*]} (envtest $K8S_VERSION, setup-envtest $SETUP_ENVTEST_VERSION)"
  fi
  if [ ! -x "$DEST/kube-controller-manager" ]; then
    local url="$K8S_RELEASE_URL/v$K8S_VERSION/bin/$GOOS/$GOARCH/kube-controller-manager"
    if ! curl -fsSL --connect-timeout 3 --max-time 300 -o "$TMP/kcm" "$url" 2>"$TMP/curl.err" ||
      ! curl -fsSL --connect-timeout 3 --max-time 30 -o "$TMP/kcm.sha256" "$url.sha256" 2>>"$TMP/curl.err"; then
      log "no download of kube-controller-manager ($url: $(tr -d '\n' <"$TMP/curl.err"))"
      return 1
    fi
    local want got
    want=$(awk '{print $1; exit}' "$TMP/kcm.sha256")
    got=$(sha256sum "$TMP/kcm" | awk '{print $1}')
    if [ "$want" != "$got" ]; then
      log "kube-controller-manager from $url has sha256 $got, not the published $want: not using it"
      return 1
    fi
    chmod +x "$TMP/kcm"
    mv "$TMP/kcm" "$DEST/kube-controller-manager"
    log "downloaded kube-controller-manager v$K8S_VERSION (sha256 checked)"
  fi
}

if download && has_all "$DEST" "${BINARIES[@]}"; then
  log "etcd and Kubernetes v$K8S_VERSION ready in $DEST"
  echo "$DEST"
  exit 0
fi
# shellcheck source=hack/lib/build.sh
. "$ROOT/hack/lib/build.sh"
build() {
  if [ ! -x "$DEST/$3" ] && [ "${ENVTEST_BUILD:-}" = never ]; then
    log "$3 is missing and ENVTEST_BUILD=never: not building it from $2"
    exit 3
  fi
  cached_build "$ROOT/hack/envtest/$1" "$2" "$3" "$4"
}
[ -x "$DEST/kube-apiserver" ] || log "kube-apiserver takes about 10 minutes to build"
k8s_ldflags=$(k8s_ldflags "$K8S_VERSION")

build etcd go.etcd.io/etcd/server/v3 etcd "-s -w"
build kubernetes k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver "$k8s_ldflags"
build kubernetes k8s.io/kubernetes/cmd/kubectl kubectl "$k8s_ldflags"
build kubernetes k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager "$k8s_ldflags"
log "etcd v$ETCD_VERSION and Kubernetes v$K8S_VERSION ready in $DEST"
echo "$DEST"
