{{/* Name of the chart, overridable. */}}
{{- define "projectsync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name (63 characters at most: a DNS label). */}}
{{- define "projectsync.fullname" -}}
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

{{- define "projectsync.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "projectsync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "projectsync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "projectsync.labels" -}}
helm.sh/chart: {{ include "projectsync.chart" . }}
{{ include "projectsync.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: projectsync
{{- end }}

{{- define "projectsync.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "projectsync.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "projectsync.leaseName" -}}
{{- default (printf "%s-leader" (include "projectsync.fullname" .)) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "projectsync.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The operator's rules on the namespaces it watches: exactly what it calls,
one rule per capability, so that tests/rbac.rs can remove each rule and see
the operator fail with "forbidden". Shared by the ClusterRole (all
namespaces) and the per-namespace Roles (watchNamespaces).

- projectsyncs list/watch: the controller's reflector, and the webhook
  receiver's lookup of one resource (a list with a metadata.name field
  selector; no get).
- projectsyncs patch: adding and removing the operator's finalizer (a JSON
  patch on the object), the webhook receiver's request annotation, and the
  API's actions (sync now, suspend/resume, spec.restore; each only after the
  caller's own SubjectAccessReview for patch). No update, and no projectsyncs/finalizers: that
  subresource only guards ownerReferences with blockOwnerDeletion, which the
  operator never sets.
- projectsyncs/status patch: status by server-side apply.
- secrets get: reading a ProjectSync's secretRef (credentials) and
  spec.webhook.secretRef (the webhook's HMAC secret).
- secrets list/watch: noticing that a referenced Secret changed (metadata only).
- events create/patch: events.k8s.io events on transitions (patch aggregates
  a repeated event into a series).
*/}}
{{- define "projectsync.rules" -}}
- apiGroups: ["projectsync.dev"]
  resources: ["projectsyncs"]
  verbs: ["list", "watch"]
- apiGroups: ["projectsync.dev"]
  resources: ["projectsyncs"]
  verbs: ["patch"]
- apiGroups: ["projectsync.dev"]
  resources: ["projectsyncs/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
