{{/* The chart's name, overridable. */}}
{{- define "keymint.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name: names every object, including the cluster-scoped
ones (ClusterRoles, the admission policy), so two releases never collide.
*/}}
{{- define "keymint.fullname" -}}
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

{{- define "keymint.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "keymint.labels" -}}
helm.sh/chart: {{ include "keymint.chart" . }}
{{ include "keymint.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: keymint
{{- end }}

{{/* Labels that select the operator's pods. */}}
{{- define "keymint.selectorLabels" -}}
app.kubernetes.io/name: {{ include "keymint.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "keymint.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "keymint.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "keymint.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The verifier's objects: named <fullname>-verifier, and its pods labelled
with a name of their own, so that the operator's selectors (Deployment,
Service, PodDisruptionBudget) never match a verifier pod, nor the
verifier's an operator pod.
*/}}
{{- define "keymint.verifier.fullname" -}}
{{- printf "%s-verifier" (include "keymint.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "keymint.verifier.labels" -}}
helm.sh/chart: {{ include "keymint.chart" . }}
{{ include "keymint.verifier.selectorLabels" . }}
app.kubernetes.io/component: verifier
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: keymint
{{- end }}

{{- define "keymint.verifier.selectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-verifier" (include "keymint.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "keymint.verifier.serviceAccountName" -}}
{{- if .Values.verifier.serviceAccount.create }}
{{- default (include "keymint.verifier.fullname" .) .Values.verifier.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.verifier.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The one namespace the verifier indexes, or "" for all. */}}
{{- define "keymint.verifier.watchNamespace" -}}
{{- default .Values.config.watchNamespace .Values.verifier.watchNamespace }}
{{- end }}
