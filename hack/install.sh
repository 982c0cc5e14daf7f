#!/usr/bin/env bash
# Installs or upgrades imagegate from a rendered manifest (kubectl kustomize config/default, or
# any overlay of it) without a moment in which Pods are refused because imagegate is not
# serving: the webhook configurations are applied last, once a replica is ready behind the
# webhook Service, and with the CA already in them.
#
#   hack/install.sh [RENDERED.yaml]     # default: kubectl kustomize config/default
#
# 1. Everything but the webhook configurations (CRDs, RBAC, the Deployment, the Service, the
#    Certificates): nothing calls imagegate yet, so nothing can be refused by its absence.
#    On an upgrade the old webhook configurations stay in force, served by the replicas
#    that the rolling update keeps available (maxUnavailable: 0).
# 2. Wait until the webhook Service has a ready endpoint: a replica serves, with its
#    policies loaded (readiness), and its certificate issued.
# 3. The webhook configurations, with caBundle set from the CA that cert-manager wrote next to
#    the serving certificate (cert-manager's CA injector keeps it up to date afterwards), so
#    the apiserver trusts the webhook from the first call.
#
# Uninstalling goes the other way: `make undeploy` deletes the webhook configurations first.
set -euo pipefail
KUBECTL=${KUBECTL:-kubectl}
NAMESPACE=${NAMESPACE:-imagegate-system}
SERVICE=${SERVICE:-imagegate-webhook-service}
CERT_SECRET=${CERT_SECRET:-webhook-server-cert}
TIMEOUT=${TIMEOUT:-300}
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ $# -ge 1 ]; then
	cp "$1" "$work/all.yaml"
else
	$KUBECTL kustomize config/default > "$work/all.yaml"
fi

# Split the documents: webhook configurations apart from the rest.
awk -v rest="$work/rest.yaml" -v hooks="$work/webhooks.yaml" '
	function flush() {
		if (doc == "") return
		out = (doc ~ /(^|\n)kind: (Validating|Mutating)WebhookConfiguration\n/) ? hooks : rest
		printf "---\n%s", doc >> out
		doc = ""
	}
	/^---/ { flush(); next }
	{ doc = doc $0 "\n" }
	END { flush() }
' "$work/all.yaml"
[ -s "$work/webhooks.yaml" ] || { echo "install: the manifest has no webhook configuration" >&2; exit 1; }

echo "==> 1/3 everything but the webhook configurations"
$KUBECTL apply --server-side --force-conflicts -f "$work/rest.yaml"

echo "==> 2/3 waiting for a ready replica behind service/$SERVICE (up to ${TIMEOUT}s)"
deadline=$(( $(date +%s) + TIMEOUT ))
until $KUBECTL -n "$NAMESPACE" get endpointslices -l "kubernetes.io/service-name=$SERVICE" \
	-o jsonpath='{.items[*].endpoints[*].conditions.ready}' 2>/dev/null | grep -qw true; do
	if [ "$(date +%s)" -ge "$deadline" ]; then
		echo "install: no ready replica behind service/$SERVICE after ${TIMEOUT}s; the webhook configurations were not applied, so nothing is refused. Check: $KUBECTL -n $NAMESPACE get pods,certificates" >&2
		exit 1
	fi
	sleep 2
done
ca=""
until ca=$($KUBECTL -n "$NAMESPACE" get secret "$CERT_SECRET" -o jsonpath='{.data.ca\.crt}' 2>/dev/null) && [ -n "$ca" ]; do
	if [ "$(date +%s)" -ge "$deadline" ]; then
		echo "install: secret/$CERT_SECRET has no ca.crt after ${TIMEOUT}s (is cert-manager running?)" >&2
		exit 1
	fi
	sleep 2
done

echo "==> 3/3 the webhook configurations, with the CA of secret/$CERT_SECRET"
# caBundle goes next to each service reference; cert-manager's injector owns it from then on.
sed "s|^\(\( *\)\)service:\$|\1caBundle: $ca\n\1service:|" "$work/webhooks.yaml" > "$work/webhooks-ca.yaml"
$KUBECTL apply --server-side --force-conflicts -f "$work/webhooks-ca.yaml"
echo "==> installed"
