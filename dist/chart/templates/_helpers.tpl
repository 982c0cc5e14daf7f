{{/* The prefix of every object's name: the release name, or <release>-imagegate. */}}
{{- define "imagegate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object; the manager's Pods are selected by imagegate.selectorLabels. */}}
{{- define "imagegate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: imagegate
{{- end -}}

{{- define "imagegate.selectorLabels" -}}
app.kubernetes.io/name: imagegate
control-plane: controller-manager
{{- end -}}

{{- define "imagegate.serviceAccountName" -}}
{{ include "imagegate.fullname" . }}-controller-manager
{{- end -}}

{{- define "imagegate.webhookServiceName" -}}
{{ include "imagegate.fullname" . }}-webhook-service
{{- end -}}

{{/* The manager's image: repository@digest, or repository:tag. */}}
{{- define "imagegate.image" -}}
{{- $repo := required "image.repository is required: imagegate publishes no image; build and push one with `make image-push REGISTRY=<registry>/<repository>:<tag>` and set image.repository (and image.tag or image.digest)" .Values.image.repository -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* The namespaces no webhook covers, the audit skips and ImageReview never decides: the
release's own first, then webhook.excludedNamespaces, comma-separated. */}}
{{- /* The namespaces the webhooks and the audit leave alone: the release's own and
webhook.excludedNamespaces; cert-manager only when cert-manager issues the certificate
(certManager.enabled), for a namespace excluded by name that does not exist can be created
by anyone allowed to create namespaces, and would then be unguarded. */ -}}
{{- define "imagegate.excludedList" -}}
{{- $l := prepend .Values.webhook.excludedNamespaces .Release.Namespace | uniq -}}
{{- if not .Values.certManager.enabled -}}
{{- $l = without $l "cert-manager" -}}
{{- end -}}
{{- toJson $l -}}
{{- end -}}

{{- define "imagegate.excludedNamespaces" -}}
{{- include "imagegate.excludedList" . | fromJsonArray | join "," -}}
{{- end -}}

{{- define "imagegate.namespaceSelector" -}}
namespaceSelector:
  matchExpressions:
  - key: kubernetes.io/metadata.name
    operator: NotIn
    values:
    {{- toYaml (include "imagegate.excludedList" . | fromJsonArray) | nindent 4 }}
{{- end -}}
