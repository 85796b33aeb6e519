{{/* The chart's name, cut to a DNS label. */}}
{{- define "weblab-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the prefix of every object the chart creates. */}}
{{- define "weblab-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "weblab-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "weblab-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: weblab-operator
{{- end }}

{{/* Labels that select the operator's pods. */}}
{{- define "weblab-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "weblab-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the pods run as. */}}
{{- define "weblab-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "weblab-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The leader Lease's name. */}}
{{- define "weblab-operator.leaseName" -}}
{{- default (include "weblab-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
Namespaces in which the operator may get Secrets: the ones listed, else the
watched namespaces; always the release namespace (the Alertmanager webhook
token lives next to the operator). One per line.
*/}}
{{- define "weblab-operator.secretNamespaces" -}}
{{- $namespaces := list .Release.Namespace }}
{{- $listed := .Values.rbac.secrets.namespaces | default .Values.watchNamespaces }}
{{- range $listed }}{{ $namespaces = append $namespaces . }}{{ end }}
{{- range (uniq $namespaces) }}
{{ . }}
{{- end }}
{{- end }}

{{/*
Namespaces in which the Rollback controller may read and patch workloads:
the ones listed, else the watched namespaces, else the release namespace.
One per line.
*/}}
{{- define "weblab-operator.rollbackNamespaces" -}}
{{- $listed := .Values.rbac.rollback.namespaces | default .Values.watchNamespaces | default (list .Release.Namespace) }}
{{- range (uniq $listed) }}
{{ . }}
{{- end }}
{{- end }}

{{- define "weblab-operator.gitopsNamespaces" -}}
{{- $listed := .Values.rbac.gitops.namespaces | default (include "weblab-operator.rollbackNamespaces" . | trim | splitList "\n") }}
{{- range (uniq $listed) }}
{{ . }}
{{- end }}
{{- end }}

{{/* Refuses settings that would break the operator at run time. */}}
{{- define "weblab-operator.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled=true: without a leader every replica would write" }}
{{- end }}
{{- if and .Values.podDisruptionBudget.enabled (not (kindIs "string" .Values.podDisruptionBudget.minAvailable)) (ge (int .Values.podDisruptionBudget.minAvailable) (int .Values.replicaCount)) (gt (int .Values.replicaCount) 1) }}
{{- fail "podDisruptionBudget.minAvailable must be below replicaCount, or no node could ever be drained" }}
{{- end }}
{{- end }}

{{/* The subjects of every binding: the operator's ServiceAccount. */}}
{{- define "weblab-operator.subjects" -}}
- kind: ServiceAccount
  name: {{ include "weblab-operator.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}
