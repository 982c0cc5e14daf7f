#!/usr/bin/env bash
# Checks imagegate's alerting rules and dashboard with promtool, built from the Go module proxy
# (hack/promtool pins its version) into bin/ the first time:
#   - `promtool check rules` on config/prometheus/rules.yaml,
#   - `promtool test rules` on its unit tests, config/prometheus/rules_test.yaml,
#   - `promtool check rules` on every query of config/grafana/imagegate.json, as recording rules.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
version=$(cd hack/promtool && go list -m -f '{{.Version}}' github.com/prometheus/prometheus)
promtool=bin/promtool-$version
if [ ! -x "$promtool" ]; then
	echo "==> Building promtool $version from the Go module proxy (once; a few minutes cold)"
	(cd hack/promtool && go build -o "../../$promtool" github.com/prometheus/prometheus/cmd/promtool)
fi
"$promtool" check rules config/prometheus/rules.yaml
(cd config/prometheus && "../../$promtool" test rules rules_test.yaml)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go run ./hack/dashboard-rules config/grafana/imagegate.json >"$tmp/dashboard-rules.yaml"
echo "Checking the queries of config/grafana/imagegate.json"
"$promtool" check rules "$tmp/dashboard-rules.yaml"
