{{- define "kes.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kes.peers" -}}{{ include "kes.fullname" . }}-peers{{- end -}}

{{- define "kes.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kes.labels" -}}
{{ include "kes.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The node-to-node address of node $id: its pod's name in the headless Service. */}}
{{- define "kes.peerAddress" -}}
{{- $ := index . 0 -}}{{- $id := index . 1 -}}
{{- printf "%s-%d.%s.%s.svc.%s:%d" (include "kes.fullname" $) (int $id) (include "kes.peers" $) $.Release.Namespace $.Values.clusterDomain (int $.Values.ports.peer) -}}
{{- end -}}

{{- define "kes.apiSecret" -}}
{{- if eq .Values.certificates.source "certManager" -}}
{{ include "kes.fullname" . }}-api-tls
{{- else -}}
{{ .Values.certificates.existingSecrets.api }}
{{- end -}}
{{- end -}}

{{- define "kes.nodeSecret" -}}
{{- $ := index . 0 -}}{{- $id := index . 1 -}}
{{- if eq $.Values.certificates.source "certManager" -}}
{{ include "kes.fullname" $ }}-node-{{ $id }}
{{- else -}}
{{ $.Values.certificates.existingSecrets.nodePrefix }}-{{ $id }}
{{- end -}}
{{- end -}}
