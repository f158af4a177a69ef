{{/* Names, labels, images and the small pieces several templates share. */}}

{{- define "rl.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object name prefix: the release name, plus the chart name unless the release already has it. */}}
{{- define "rl.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Cluster-scoped objects (ClusterRoles, the admission policy) carry the namespace too, so two
releases of the same name in different namespaces do not collide. */}}
{{- define "rl.clusterName" -}}
{{- printf "%s-%s" (include "rl.fullname" .) .Release.Namespace | trunc 200 | trimSuffix "-" -}}
{{- end -}}

{{- define "rl.operatorName" -}}{{ include "rl.fullname" . }}-operator{{- end -}}
{{- define "rl.agentName" -}}{{ include "rl.fullname" . }}-agent{{- end -}}
{{- define "rl.devicePluginName" -}}{{ include "rl.fullname" . }}-device-plugin{{- end -}}
{{- define "rl.gatewayName" -}}{{ include "rl.fullname" . }}-gateway{{- end -}}

{{- define "rl.clusterTokenSecret" -}}
{{- .Values.clusterToken.existingSecret | default (printf "%s-cluster-token" (include "rl.fullname" .)) -}}
{{- end -}}

{{- define "rl.apiKeysSecret" -}}
{{- .Values.operator.apiKeys.existingSecret | default (printf "%s-api-keys" (include "rl.fullname" .)) -}}
{{- end -}}

{{/* Key of the api-keys Secret holding the lines. */}}
{{- define "rl.apiKeysKey" -}}
{{- if .Values.operator.apiKeys.existingSecret -}}{{ .Values.operator.apiKeys.existingSecretKey }}{{- else -}}keys{{- end -}}
{{- end -}}

{{- define "rl.apiKeysEnabled" -}}
{{- if or .Values.operator.apiKeys.keys .Values.operator.apiKeys.existingSecret -}}true{{- end -}}
{{- end -}}

{{- define "rl.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "rl.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rockchip-llama
{{- end -}}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "agent"). */}}
{{- define "rl.selector" -}}
app.kubernetes.io/name: {{ include "rl.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "rl.componentLabels" -}}
{{ include "rl.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* An image reference: call with (dict "ctx" $ "image" .Values.agent.image). */}}
{{- define "rl.image" -}}
{{- $registry := .ctx.Values.image.registry | trimSuffix "/" -}}
{{- $repo := .image.repository -}}
{{- if $registry -}}{{- $repo = printf "%s/%s" $registry $repo -}}{{- end -}}
{{- $tag := .image.tag | default .ctx.Values.image.tag | default .ctx.Chart.AppVersion -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{/* Env entries for the values that are set (null means: the binary's default); 0 and false
are set. Call with a list of (list "ROCKCHIP_LLAMA_X" .Values.x) pairs; use as
{{- with include "rl.optEnvs" (list ...) }}{{ . | nindent N }}{{ end }}. */}}
{{- define "rl.optEnvs" -}}
{{- $out := list -}}
{{- range . -}}
{{- if not (kindIs "invalid" (index . 1)) -}}
{{- $out = append $out (printf "- name: %s\n  value: %s" (index . 0) (index . 1 | toString | quote)) -}}
{{- end -}}
{{- end -}}
{{- join "\n" $out -}}
{{- end -}}

{{/* The hardened container security context every container starts from. */}}
{{- define "rl.restrictedContainer" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Changes only when the user changes the token's source, so a generated token (read back
with lookup on every upgrade) never restarts the pods, and a new clusterToken.value does. */}}
{{- define "rl.clusterTokenChecksum" -}}
{{- printf "%s/%s" .Values.clusterToken.existingSecret .Values.clusterToken.value | sha256sum -}}
{{- end -}}

{{/* The agent's service-account user name, as the API server sees it. */}}
{{- define "rl.agentUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "rl.agentName" . }}
{{- end -}}
