# Sourced by hack/setup-envtest.sh and hack/setup-node.sh, which set DEST (the cache folder)
# and log (a function printing to stderr).

# cached_build MODULE_DIR PACKAGE OUT LDFLAGS [GO BUILD FLAGS...] builds PACKAGE in the Go
# module at MODULE_DIR into $DEST/OUT, unless an executable is there already. CGO_ENABLED
# defaults to 0. It builds into a temporary name and renames, so that an interrupted build
# never leaves a truncated binary that the cache check takes for a good one, and prints a
# progress line every 30 seconds, so that a first run does not look hung.
cached_build() {
  local dir=$1 pkg=$2 out=$3 ldflags=$4 start=$SECONDS ticker
  shift 4
  if [ -x "$DEST/$out" ]; then return 0; fi
  mkdir -p "$(dirname "$DEST/$out")"
  log "building $out from $pkg (first time only)"
  (while sleep 30; do log "still building $out: $((SECONDS - start))s"; done) &
  ticker=$!
  if ! (cd "$dir" && CGO_ENABLED=${CGO_ENABLED:-0} go build -trimpath -ldflags "$ldflags" "$@" -o "$DEST/$out.tmp" "$pkg"); then
    kill "$ticker" 2>/dev/null || true
    return 1
  fi
  kill "$ticker" 2>/dev/null || true
  mv "$DEST/$out.tmp" "$DEST/$out"
  log "built $out in $((SECONDS - start))s"
}

# k8s_ldflags VERSION is what Kubernetes' own build stamps into its commands: the version
# kubectl version and the apiserver's /version report, and the kubelet registers its node with.
k8s_ldflags() {
  local vpkg=k8s.io/component-base/version
  echo "-s -w -X $vpkg.gitVersion=v$1 -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$(echo "$1" | cut -d. -f2)" \
    "-X $vpkg.gitTreeState=clean -X $vpkg.buildDate=1970-01-01T00:00:00Z -X k8s.io/client-go/pkg/version.gitVersion=v$1"
}
