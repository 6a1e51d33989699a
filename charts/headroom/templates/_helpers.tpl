{{/*
The exporters this chart knows, in rendering order: the key under `exporters` in the
values, and the binary the image holds as /usr/local/bin/<binary> (the crate's [[bin]]
name, which follows no one pattern). tests/test_helm.py checks this list against the
workspace's exporter crates.
*/}}
{{- define "headroom.exporterList" -}}
- {name: ssm, binary: ssm_quota_exporter}
- {name: ecr, binary: ecr_quota_exporter}
- {name: s3, binary: s3_quota_exporter}
- {name: servicequotas, binary: servicequotas_exporter}
{{- end }}

{{/* The exporter keys, in rendering order, separated by spaces. */}}
{{- define "headroom.exporterNames" -}}
{{- $names := list }}
{{- range include "headroom.exporterList" . | fromYamlArray }}
{{- $names = append $names .name }}
{{- end }}
{{- join " " $names }}
{{- end }}

{{/* The path of an exporter's binary in the image. Context: dict "root" $ "name" <exporter>. */}}
{{- define "headroom.exporter.command" -}}
{{- $name := .name }}
{{- $binary := "" }}
{{- range include "headroom.exporterList" .root | fromYamlArray }}
{{- if eq .name $name }}{{ $binary = .binary }}{{ end }}
{{- end }}
{{- if not $binary }}
{{- fail (printf "templates/_helpers.tpl: exporter %q has no binary in headroom.exporterList" $name) }}
{{- end }}
{{- printf "/usr/local/bin/%s" $binary }}
{{- end }}

{{- define "headroom.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name, at most 59 characters. An exporter's resources are
<fullname>-<exporter>, the full name cut further where that suffix needs it
(headroom.exporter.fullname), so every name stays within 63.
*/}}
{{- define "headroom.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 59 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 59 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 59 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "headroom.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "headroom.selectorLabels" -}}
app.kubernetes.io/name: {{ include "headroom.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "headroom.labels" -}}
helm.sh/chart: {{ include "headroom.chart" . }}
{{ include "headroom.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: headroom
{{- end }}

{{/* <fullname>-<exporter> within 63 characters: the full name is cut to leave room
for the suffix ("-ssm" fits the full name's own 59; "-servicequotas" leaves 49), so
names that fitted before an exporter was added do not change.
Context: dict "root" $ "name" <exporter>. */}}
{{- define "headroom.exporter.fullname" -}}
{{- $prefix := include "headroom.fullname" .root | trunc (int (sub 62 (len .name))) | trimSuffix "-" }}
{{- printf "%s-%s" $prefix .name }}
{{- end }}

{{- define "headroom.exporter.selectorLabels" -}}
{{ include "headroom.selectorLabels" .root }}
app.kubernetes.io/component: {{ .name }}-exporter
{{- end }}

{{- define "headroom.exporter.labels" -}}
{{ include "headroom.labels" .root }}
app.kubernetes.io/component: {{ .name }}-exporter
{{- end }}

{{- define "headroom.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "headroom.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "headroom.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The exporter's config file as mounted; an empty config is an empty mapping. */}}
{{- define "headroom.exporter.configFile" -}}
{{- $config := (index .root.Values.exporters .name).config | default dict }}
{{- toYaml $config }}
{{- end }}

{{/* Non-empty when at least one exporter is enabled. */}}
{{- define "headroom.anyExporter" -}}
{{- range $name := splitList " " (include "headroom.exporterNames" .) }}
{{- if (index $.Values.exporters $name).enabled }}true{{ end }}
{{- end }}
{{- end }}

{{/* The web config file (--web.config.file) with TLS; its files are in the projected
config volume, next to it under tls/. */}}
{{- define "headroom.webConfigFile" -}}
{{- $tls := .Values.web.tls -}}
tls_server_config:
  cert_file: tls/tls.crt
  key_file: tls/tls.key
  min_version: {{ $tls.minVersion }}
  {{- if ne $tls.clientAuthType "NoClientCert" }}
  client_auth_type: {{ $tls.clientAuthType }}
  client_ca_file: tls/client-ca.crt
  {{- end }}
{{- end }}

{{/* Fails on TLS settings that cannot work, before anything is installed. */}}
{{- define "headroom.checkTls" -}}
{{- $tls := .Values.web.tls }}
{{- if $tls.enabled }}
{{- if not $tls.secretName }}
{{- fail "web.tls.secretName: required with web.tls.enabled (a Secret with tls.crt and tls.key)" }}
{{- end }}
{{- if and (eq $tls.clientAuthType "RequireAndVerifyClientCert") .Values.serviceMonitor.enabled (not .Values.serviceMonitor.tls.clientCertSecretName) }}
{{- fail "serviceMonitor.tls.clientCertSecretName: required with web.tls.clientAuthType RequireAndVerifyClientCert, or Prometheus cannot scrape" }}
{{- end }}
{{- end }}
{{- end }}

{{/* A probe: an HTTP(S) GET of the path, or only a TCP connection under mutual TLS,
where the kubelet has no client certificate. Context: dict "root" $ "path" <path>. */}}
{{- define "headroom.probe" -}}
{{- $tls := .root.Values.web.tls }}
{{- if and $tls.enabled (eq $tls.clientAuthType "RequireAndVerifyClientCert") }}
tcpSocket:
  port: http-metrics
{{- else }}
httpGet:
  path: {{ .path }}
  port: http-metrics
  {{- if $tls.enabled }}
  scheme: HTTPS
  {{- end }}
{{- end }}
{{- end }}
