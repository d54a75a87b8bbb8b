{{/* The chart name, or nameOverride. */}}
{{- define "meshmetrics.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The name of every resource. Handlers dial the Service by it, so it is the
release name when that already says meshmetrics (the plain manifests use
release "meshmetrics"), rather than "meshmetrics-meshmetrics".
*/}}
{{- define "meshmetrics.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "meshmetrics.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the pods; they must never change for a release. */}}
{{- define "meshmetrics.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meshmetrics.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every resource. */}}
{{- define "meshmetrics.labels" -}}
{{ include "meshmetrics.selectorLabels" . }}
app.kubernetes.io/version: {{ include "meshmetrics.tag" . | quote }}
app.kubernetes.io/component: mixer-adapter
app.kubernetes.io/part-of: istio
{{- end -}}

{{/* The image tag: image.tag, else the chart's appVersion. */}}
{{- define "meshmetrics.tag" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if eq $tag "latest" -}}
{{- fail "image.tag must not be \"latest\": pin a release so that rollouts and rollbacks are reproducible" -}}
{{- end -}}
{{- $tag -}}
{{- end -}}

{{- define "meshmetrics.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (include "meshmetrics.tag" .) -}}
{{- end -}}
{{- end -}}

{{- define "meshmetrics.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "meshmetrics.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "meshmetrics.libratoSecretName" -}}
{{- required "librato.secret.name must be set" .Values.librato.secret.name -}}
{{- end -}}
