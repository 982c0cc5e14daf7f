# imagegate. `make help` lists the targets.

# Tools are built from the Go module proxy into bin/ at these pinned versions.
CONTROLLER_TOOLS_VERSION ?= v0.23.0
KUSTOMIZE_VERSION ?= v5.8.2
GOLANGCI_LINT_VERSION ?= v2.15.0
# kube-api-linter has no releases: a pinned pseudo-version of sigs.k8s.io/kube-api-linter.
KUBE_API_LINTER_VERSION ?= v0.0.0-20260716143926-092fe0c72997
# Writes a CycloneDX SBOM of each release binary from the module list Go stamps into it.
CYCLONEDX_GOMOD_VERSION ?= v1.10.0

# The manager's container image, for docker-build, deploy and build-installer. No default:
# imagegate publishes no image yet, and a Deployment whose image cannot be pulled leaves a
# failurePolicy: Fail webhook with no replica, refusing every Pod in covered namespaces.
IMG ?=

# The version imagegate version prints.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

LOCALBIN ?= $(CURDIR)/bin
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
KUSTOMIZE ?= $(LOCALBIN)/kustomize-$(KUSTOMIZE_VERSION)
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
KUBE_API_LINTER ?= $(LOCALBIN)/golangci-lint-kube-api-linter-$(KUBE_API_LINTER_VERSION)
CYCLONEDX_GOMOD ?= $(LOCALBIN)/cyclonedx-gomod-$(CYCLONEDX_GOMOD_VERSION)

# Fuzz time per target: CI runs each for FUZZTIME; `make fuzz FUZZTIME=5m` for longer.
FUZZTIME ?= 20s

comma := ,
# The unit tests validate the CLI's JUnit output against its schema with libxml2 (cgo).
REQUIRE_LIBXML2 := hack/require-devel.sh libxml-2.0 libxml2-dev libxml2-devel "the JUnit schema test needs libxml2"
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate the CRDs, RBAC and webhook configuration under config/, and copy what the Helm chart shares with config/ into dist/chart/files.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd webhook paths="./..." output:crd:artifacts:config=config/crd/bases
	@hack/sync-chart.sh

.PHONY: generate
generate: controller-gen ## Generate the DeepCopy methods of the API types.
	$(CONTROLLER_GEN) object paths="./api/..."

.PHONY: fmt
fmt: ## Run gofmt; fails when a file was not formatted.
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './bin/*')); \
	if [ -n "$$out" ]; then echo "gofmt would change: $$out"; gofmt -w $$out; exit 1; fi

.PHONY: vet
vet: ## Run go vet (the product and the modules of the e2e suite, the integration tests and the make bench harness).
	@$(REQUIRE_LIBXML2)
	go vet ./...
	cd test/e2e && go vet -tags e2e ./...
	cd test/integration && go vet ./...
	cd test/bench && go vet ./...

.PHONY: verify
verify: manifests generate ## Regenerate, then fail when generated files differ from the committed ones, or a tracked file is over 1 MiB.
	@git diff --exit-code -- api config dist/chart || { echo "generated files are stale: run 'make manifests generate' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- api config dist/chart | grep '^??')" || { git status --porcelain -- api config dist/chart; echo "generated files are not tracked by git"; exit 1; }
	@hack/check-go-line.sh
	@hack/check-file-sizes.sh

.PHONY: setup-envtest
setup-envtest: ## Build or find kube-apiserver, etcd, kubectl and kube-controller-manager; print KUBEBUILDER_ASSETS.
	@hack/setup-envtest.sh

.PHONY: setup-node
setup-node: ## Build or find the node of the demo and the e2e suite (containerd, runc, kubelet, kube-scheduler, CNI plugins); print its folder.
	@hack/setup-node.sh

.PHONY: test
test: fmt vet verify ## Unit tests, fuzz seeds and envtest suites with -race, a coverage summary, the integration tests (the Helm chart's lint and render, config/), and promtool on the alerts and the dashboard.
	@$(REQUIRE_LIBXML2)
	@assets=$$(hack/setup-envtest.sh | tail -n 1); \
	echo "KUBEBUILDER_ASSETS=$$assets"; \
	KUBEBUILDER_ASSETS=$$assets go test -race -count=1 -coverpkg=./internal/... -coverprofile=cover.out ./... && \
	go tool cover -func=cover.out | tail -n 1 && \
	cd test/integration && KUBEBUILDER_ASSETS=$$assets go test -race -count=1 ./...
	cd test/bench && go test -count=1 ./...
	hack/check-monitoring.sh

.PHONY: demo
demo: build ## Run imagegate on a local control plane with a node (as root on Linux) and show it at work; KEEP=1 leaves it running.
	@assets=$$(hack/setup-envtest.sh --with-controller-manager | tail -n 1); \
	node=$$(if [ "$$(id -u)" = 0 ] && [ "$$(uname -s)" = Linux ]; then hack/setup-node.sh | tail -n 1; fi); \
	go build -o bin/demo ./hack/demo; \
	bin/demo --bin-dir "$$assets" --manager bin/manager --node-dir "$$node" $(if $(KEEP),--keep)

.PHONY: test-e2e
test-e2e: build ## End-to-end suite: the real manager binary, control plane, kubectl, cert-manager's CA injector and a node (kubelet, containerd, runc), as root (test/e2e); V=1 for every kubectl line.
	@assets=$$(hack/setup-envtest.sh --with-controller-manager | tail -n 1); \
	node=$$(hack/setup-node.sh | tail -n 1); \
	(cd hack/cainjector && go build -o ../../bin/cainjector .); \
	certmanager=$$(cd hack/cainjector && go list -m -f '{{.Dir}}' github.com/cert-manager/cert-manager); \
	cd test/e2e && E2E_BIN_DIR=$$assets E2E_NODE_DIR=$$node E2E_CAINJECTOR=$(CURDIR)/bin/cainjector E2E_CERT_MANAGER_DIR=$$certmanager \
	go test -tags e2e -count=1 -timeout 20m . $(if $(V),-v -ginkgo.v)

.PHONY: test-reliability
test-reliability: build ## Hostile input, faults, certificate rotation, drain and HA, printing what each measured.
	go test -count=1 -v -run 'TestHostileInput|TestSlowClientIsCutOff|TestBadRequestsDoNotGrowMemory' ./internal/webhook/ | grep -E '^(---|ok|FAIL)|RSS'
	@assets=$$(hack/setup-envtest.sh --with-controller-manager | tail -n 1); \
	cd test/e2e && E2E_BIN_DIR=$$assets go test -tags e2e -count=1 -timeout 20m -v . -ginkgo.focus 'Reliability|faults|High availability' | \
	grep -E -A2 'Report Entries|Ran |^(ok|FAIL|PASS)'

.PHONY: fuzz
fuzz: ## Run every fuzz target for FUZZTIME each (default 20s).
	@hack/fuzz.sh $(FUZZTIME)

LAYERS ?= engine,server,apiserver,interleaved,verify,podwatch
BENCH_OUT ?= docs/benchmarks.md
.PHONY: bench
bench: build ## Measure imagegate against OPA (Gatekeeper Rego), cel-go (VAP), a no-op webhook, Gatekeeper and Kyverno; write docs/benchmarks.md and .png (LAYERS=engine,server,apiserver,interleaved,verify,podwatch; BENCH_OUT=another report); then the signature verification benchmarks.
	@assets=$$(hack/setup-envtest.sh --with-controller-manager | tail -n 1) && hack/bench/setup-peers.sh && \
	gk=$$(cd hack/bench/gatekeeper && go list -m -f '{{.Dir}}' github.com/open-policy-agent/gatekeeper/v3) && \
	ky=$$(cd hack/bench/kyverno && go list -m -f '{{.Dir}}' github.com/kyverno/kyverno) && \
	cd test/bench && go build -o ../../bin/bench . && \
	../../bin/bench -root ../.. -layers '$(LAYERS)' -out '$(BENCH_OUT)' -command 'make bench$(if $(filter-out engine$(comma)server$(comma)apiserver$(comma)interleaved$(comma)verify$(comma)podwatch,$(LAYERS)), LAYERS=$(LAYERS))$(if $(filter-out docs/benchmarks.md,$(BENCH_OUT)), BENCH_OUT=$(BENCH_OUT))' -k8s-bin "$$assets" -gatekeeper-module "$$gk" -kyverno-module "$$ky"
	@echo "==> Signature and attestation verification: admission with a warm verify cache beside the same Pod without a verify rule, the pinning webhook, a cold verification on a loopback registry (signature alone, and with a 200-finding Trivy scan; p50, p99, registry requests), a cached one, and the audit's cost per running image with and without a verify rule"
	go test -run '^$$' -bench 'BenchmarkPodHandler|BenchmarkColdVerification|BenchmarkCachedVerification' -benchmem ./internal/webhook/ ./internal/verify/
	@echo "==> The memory of the caches of trust material and registry tokens: 1,000 KMS public keys, and the image credential providers' cache full (1,024 ECR-sized tokens)"
	go test -run '^$$' -bench 'BenchmarkRemoteCacheMemory|BenchmarkCacheMemory' -benchtime 3x ./internal/verify/ ./internal/credentials/
	go test -run '^$$' -bench 'BenchmarkAuditRunningImages' -benchtime 20x -benchmem ./internal/controller/
	@echo "==> The policy change preflight: 10,000 running Pods of 200 namespaces judged against a changed policy (the webhook's work but for listing its cache)"
	go test -run '^$$' -bench 'BenchmarkPreflight10000Pods' -benchtime 10x -benchmem ./internal/preflight/

.PHONY: sizing
sizing: build ## Measure the manager's memory with PODS Pods (default 10000) in NAMESPACES namespaces (default 10) cached for the audit, after a burst of POLICIES ClusterImagePolicies (default none) and its peak; REPORTS=1 also counts the OpenReports writes per audit pass.
	@assets=$$(hack/setup-envtest.sh --with-controller-manager | tail -n 1); \
	go run ./hack/sizing --bin-dir "$$assets" --manager bin/manager $(if $(PODS),--pods $(PODS)) $(if $(POLICIES),--policies $(POLICIES)) $(if $(NAMESPACES),--namespaces $(NAMESPACES)) $(if $(REPORTS),--reports)

.PHONY: bench-engine
bench-engine: ## Run imagegate's own Go benchmarks (engine, parser, handler) and print ns/op and allocs/op.
	go test -run '^$$' -bench . -benchmem ./internal/policy/ ./internal/imageref/ ./internal/webhook/

.PHONY: lint
lint: golangci-lint kube-api-linter ## Run golangci-lint (the product, the e2e suite, the integration tests), and kube-api-linter on api/ (.golangci-kal.yml).
	@$(REQUIRE_LIBXML2)
	$(GOLANGCI_LINT) run ./...
	cd test/e2e && $(GOLANGCI_LINT) run --config ../../.golangci.yml ./...
	cd test/integration && $(GOLANGCI_LINT) run --config ../../.golangci.yml ./...
	$(KUBE_API_LINTER) run -c .golangci-kal.yml ./api/...

##@ Build

.PHONY: build
build: ## Build bin/manager and bin/imagegate (the CLI), both stamped with VERSION (git describe).
	go build -ldflags "-X main.version=$(VERSION)" -o bin/manager ./cmd/manager
	go build -ldflags "-X main.version=$(VERSION)" -o bin/imagegate ./cmd/imagegate

RELEASE_PLATFORMS ?= linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64
.PHONY: release
release: cyclonedx-gomod ## Build the CLI (imagegate check) for every platform into dist/release, each with a CycloneDX SBOM (.cdx.json), and SHA256SUMS, stamped with VERSION.
	@rm -rf dist/release && mkdir -p dist/release
	@for p in $(RELEASE_PLATFORMS); do \
	  os=$${p%/*}; arch=$${p#*/}; ext=; [ $$os = windows ] && ext=.exe; \
	  out=dist/release/imagegate_$(VERSION)_$${os}_$${arch}$$ext; \
	  echo "go build $$out"; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch go build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o $$out ./cmd/imagegate || exit 1; \
	  $(CYCLONEDX_GOMOD) bin -json -version $(VERSION) -output $${out%.exe}.cdx.json $$out || exit 1; \
	done
	cd dist/release && sha256sum imagegate_* > SHA256SUMS && cat SHA256SUMS

.PHONY: image
image: ## Build the manager's OCI image (linux/amd64 and linux/arm64, non-root, the manager alone) into dist/image, without a Docker engine (hack/image, go-containerregistry).
	go run ./hack/image --version $(VERSION) --out dist/image

.PHONY: image-push
image-push: ## Build the image and push it to REGISTRY (registry/repository:tag) with the credentials docker login wrote.
	$(if $(REGISTRY),,$(error REGISTRY is not set: make image-push REGISTRY=registry.example.com/imagegate:v0.2.0))
	go run ./hack/image --version $(VERSION) --out dist/image --push $(REGISTRY)

.PHONY: test-image
test-image: ## Build the image for both platforms and check it as a runtime reads it (slow the first time: it cross-compiles the manager).
	go test -tags image -count=1 -timeout 30m ./hack/image/

.PHONY: docker-build
docker-build: require-img ## Build the manager's container image IMG (needs a Docker engine).
	docker build --build-arg VERSION=$(VERSION) -t $(IMG) .

.PHONY: run
run: manifests generate ## Run the manager from your host against the cluster in KUBECONFIG (self-signed serving certificate).
	go run ./cmd/manager $(ARGS)

##@ Deployment

.PHONY: require-img
require-img:
	$(if $(IMG),,$(error IMG is not set: build and push the manager's image to a registry your cluster pulls from (make docker-build IMG=registry.example.com/imagegate:v0.1.0), then pass the same IMG. An image the cluster cannot pull leaves the fail-closed webhook without a replica, refusing every Pod in covered namespaces))

.PHONY: build-installer
build-installer: require-img manifests generate kustomize ## Render the whole installation, with image IMG, into dist/install.yaml.
	mkdir -p dist
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(KUSTOMIZE) build config/default > dist/install.yaml

.PHONY: deploy
deploy: require-img manifests kustomize ## Install or upgrade with image IMG in the cluster in KUBECONFIG (needs cert-manager): the webhook configurations last, once a replica is ready (hack/install.sh).
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(KUSTOMIZE) build config/default > bin/install.yaml
	hack/install.sh bin/install.yaml

.PHONY: undeploy
undeploy: kustomize ## Remove the installation from the cluster in KUBECONFIG, webhook configuration first; the policies stay (undeploy-crds removes them).
	kubectl delete --ignore-not-found validatingwebhookconfiguration imagegate-validating-webhook-configuration
	kubectl delete --ignore-not-found mutatingwebhookconfiguration imagegate-mutating-webhook-configuration
	$(KUSTOMIZE) build config/uninstall | kubectl delete --ignore-not-found -f -

.PHONY: undeploy-crds
undeploy-crds: undeploy ## Also remove the CRDs, and with them every ImagePolicy and ClusterImagePolicy.
	$(KUSTOMIZE) build config/crd | kubectl delete --ignore-not-found -f -

##@ Tools

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN)
$(CONTROLLER_GEN):
	$(call go-install-tool,$(CONTROLLER_GEN),sigs.k8s.io/controller-tools/cmd/controller-gen,$(CONTROLLER_TOOLS_VERSION),controller-gen)

.PHONY: kustomize
kustomize: $(KUSTOMIZE)
$(KUSTOMIZE):
	$(call go-install-tool,$(KUSTOMIZE),sigs.k8s.io/kustomize/kustomize/v5,$(KUSTOMIZE_VERSION),kustomize)

# A golangci-lint build with kube-api-linter as a module, as `golangci-lint custom` would make
# it (that command clones golangci-lint from GitHub; this builds the same from the module proxy).
.PHONY: kube-api-linter
kube-api-linter: $(KUBE_API_LINTER)
$(KUBE_API_LINTER):
	$(call go-install-tool,$(KUBE_API_LINTER),sigs.k8s.io/kube-api-linter/cmd/golangci-lint-kube-api-linter,$(KUBE_API_LINTER_VERSION),golangci-lint-kube-api-linter)

.PHONY: cyclonedx-gomod
cyclonedx-gomod: $(CYCLONEDX_GOMOD)
$(CYCLONEDX_GOMOD):
	$(call go-install-tool,$(CYCLONEDX_GOMOD),github.com/CycloneDX/cyclonedx-gomod/cmd/cyclonedx-gomod,$(CYCLONEDX_GOMOD_VERSION),cyclonedx-gomod)

.PHONY: golangci-lint
golangci-lint: $(GOLANGCI_LINT)
$(GOLANGCI_LINT):
	$(call go-install-tool,$(GOLANGCI_LINT),github.com/golangci/golangci-lint/v2/cmd/golangci-lint,$(GOLANGCI_LINT_VERSION),golangci-lint)

# go-install-tool builds package $(2) at version $(3), whose binary is named $(4), into the
# versioned path $(1).
define go-install-tool
@[ -f "$(1)" ] || { \
set -e; \
echo "Building $(2)@$(3)"; \
mkdir -p $(LOCALBIN); \
GOBIN=$(LOCALBIN) go install $(2)@$(3); \
mv "$(LOCALBIN)/$(4)" "$(1)"; \
}
endef
