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

{{/* Labels of every resource: the selector labels and Helm's standard ones. */}}
{{- define "meshmetrics.labels" -}}
{{ include "meshmetrics.selectorLabels" . }}
app.kubernetes.io/version: {{ include "meshmetrics.tag" . | quote }}
app.kubernetes.io/component: mixer-adapter
app.kubernetes.io/part-of: istio
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end -}}

{{/*
Version guards. `helm template --kube-version X` sets only the version, a
live cluster (or --api-versions) only the API list, so an API is used when
both say it exists.
*/}}
{{- define "meshmetrics.kubeAtLeast" -}}
{{- if semverCompare (printf ">=%s-0" .version) .root.Capabilities.KubeVersion.Version -}}true{{- end -}}
{{- end -}}

{{/* policy/v1 PodDisruptionBudget: Kubernetes 1.21+. */}}
{{- define "meshmetrics.pdbAPI" -}}
{{- if and (.Capabilities.APIVersions.Has "policy/v1") (include "meshmetrics.kubeAtLeast" (dict "root" . "version" "1.21")) -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end -}}
{{- end -}}

{{/* autoscaling/v2 HorizontalPodAutoscaler: Kubernetes 1.23+. */}}
{{- define "meshmetrics.hasHPAv2" -}}
{{- if and (.Capabilities.APIVersions.Has "autoscaling/v2") (include "meshmetrics.kubeAtLeast" (dict "root" . "version" "1.23")) -}}true{{- end -}}
{{- end -}}

{{/*
The kubelet's native gRPC probe: beta and on by default from Kubernetes 1.24
(GA in 1.27). It cannot speak TLS.
*/}}
{{- define "meshmetrics.grpcLiveness" -}}
{{- if and .Values.probes.grpc (not .Values.tls.enabled) (include "meshmetrics.kubeAtLeast" (dict "root" . "version" "1.24")) -}}true{{- end -}}
{{- end -}}

{{/*
The release that owns a Mixer CR already in the cluster, or "" when there is
none (always "" under `helm template`, which has no cluster to look in).
Argument: (dict "root" . "kind" "adapter" "name" "meshmetrics").
*/}}
{{- define "meshmetrics.crOwner" -}}
{{- $obj := lookup "config.istio.io/v1alpha2" .kind .root.Values.mixer.namespace .name -}}
{{- if $obj -}}
{{- $ann := dig "metadata" "annotations" dict $obj -}}
{{- printf "%s/%s" (index $ann "meta.helm.sh/release-namespace" | default "?") (index $ann "meta.helm.sh/release-name" | default "(none: not installed by Helm)") -}}
{{- end -}}
{{- end -}}

{{/*
Fails when a Mixer CR the chart would install belongs to another release:
the adapter and template CRs are one per config namespace, shared by every
meshmetrics release there. Names every such CR and the values that leave
them out, whichever template calls it first.
*/}}
{{- define "meshmetrics.requireOwnCRs" -}}
{{- $self := printf "%s/%s" .Release.Namespace .Release.Name -}}
{{- $taken := list -}}
{{- $sets := list -}}
{{- range $cr := list (dict "kind" "adapter" "name" "meshmetrics" "value" "mixer.adapter" "on" $.Values.mixer.adapter) (dict "kind" "template" "name" "metric" "value" "mixer.template" "on" $.Values.mixer.template) -}}
{{- if $cr.on -}}
{{- $owner := include "meshmetrics.crOwner" (dict "root" $ "kind" $cr.kind "name" $cr.name) -}}
{{- if and $owner (ne $owner $self) -}}
{{- $taken = append $taken (printf "the %s CR %s.%s already exists and belongs to release %s" $cr.kind $cr.name $.Values.mixer.namespace $owner) -}}
{{- $sets = append $sets (printf "--set %s=false" $cr.value) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $taken -}}
{{- fail (printf "%s: they are one per Mixer config namespace, shared by every meshmetrics release there. Install this release with %s (its handlers use the existing CRs)" (join "; " $taken) (join " " $sets)) -}}
{{- end -}}
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
