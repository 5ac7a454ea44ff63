{{/* Base name of the chart's objects. */}}
{{- define "mlkube.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: <release>-<chart>, or the release name when it already contains the chart name. */}}
{{- define "mlkube.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of the operator's objects. */}}
{{- define "mlkube.operatorName" -}}
{{- printf "%s-operator" (include "mlkube.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mlkube.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "mlkube.labels" -}}
helm.sh/chart: {{ include "mlkube.chart" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mlkube
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Selector labels of the operator pods (immutable over upgrades). */}}
{{- define "mlkube.operatorSelectorLabels" -}}
app.kubernetes.io/name: mlkube-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "mlkube.operatorLabels" -}}
{{ include "mlkube.labels" . }}
app.kubernetes.io/name: mlkube-operator
app.kubernetes.io/component: operator
{{- end -}}

{{- define "mlkube.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mlkube.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "mlkube.image" -}}
{{- $repo := printf "%s/%s" .Values.image.registry .Values.image.repository | trimPrefix "/" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repo .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default (printf "v%s" .Chart.AppVersion) .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Whether leader election is on: forced by the value, else when more than one replica runs. */}}
{{- define "mlkube.leaderElection" -}}
{{- $forced := .Values.operator.leaderElection.enabled -}}
{{- if kindIs "bool" $forced -}}
{{- ternary "true" "false" $forced -}}
{{- else -}}
{{- ternary "true" "false" (gt (int .Values.operator.replicas) 1) -}}
{{- end -}}
{{- end -}}

{{/* The operator's Lease name is fixed (operator/src/run.rs LEASE_NAME): one operator per namespace. */}}
{{- define "mlkube.leaseName" -}}
mlkube-operator
{{- end -}}

{{/* Whether Prometheus Operator objects render: the value, or (auto) whether the API is served. */}}
{{- define "mlkube.prometheusOperator" -}}
{{- $mode := toString .Values.monitoring.prometheusOperator -}}
{{- if eq $mode "true" -}}
true
{{- else if eq $mode "false" -}}
false
{{- else -}}
{{- ternary "true" "false" (.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") -}}
{{- end -}}
{{- end -}}

{{/* Labels of ServiceMonitors and PrometheusRules: monitoring.labels plus the given extra labels. */}}
{{- define "mlkube.monitoringLabels" -}}
{{- $labels := merge (deepCopy (default dict .extra)) (deepCopy (default dict .root.Values.monitoring.labels)) -}}
{{- with $labels -}}
{{ toYaml . }}
{{- end -}}
{{- end -}}
