{{/*
Shared helpers. Most take a dict: "root" (the top context), "name" (the service) and
"svc" (its settings: `defaults` merged with its entry, see cloudshelf.settings).
*/}}

{{/* A service's settings: `defaults` overridden by its entry, as YAML (use with fromYaml). */}}
{{- define "cloudshelf.settings" -}}
{{- $entry := index .root.Values.services .name | default dict -}}
{{- $svc := mergeOverwrite (deepCopy .root.Values.defaults) (deepCopy $entry) -}}
{{- $_ := required (printf "services.%s.port is required" .name) $svc.port -}}
{{- toYaml $svc -}}
{{- end -}}

{{/* <release>-<service>: the name of every object of a service, and its peers' host name. */}}
{{- define "cloudshelf.componentName" -}}
{{- printf "%s-%s" .root.Release.Name .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cloudshelf.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cloudshelf.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "cloudshelf.labels" -}}
{{ include "cloudshelf.selectorLabels" . }}
app.kubernetes.io/part-of: cloudshelf
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ include "cloudshelf.chart" .root }}
{{- end -}}

{{- define "cloudshelf.image" -}}
{{- $image := .Values.image -}}
{{- $ref := printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) -}}
{{- if $image.digest -}}
{{- $ref = printf "%s@%s" $ref $image.digest -}}
{{- end -}}
{{- $ref -}}
{{- end -}}

{{- define "cloudshelf.provisionServiceAccount" -}}
{{- if .Values.provision.serviceAccount.create -}}
{{- default (printf "%s-provision" .Release.Name | trunc 63 | trimSuffix "-") .Values.provision.serviceAccount.name -}}
{{- else -}}
{{- required "provision.serviceAccount.name is required when create is false" .Values.provision.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The environment of a service's container (the hook Job's too): what
cloudshelf/runtime/config.py reads. Secrets only by reference.
*/}}
{{- define "cloudshelf.env" -}}
{{- $root := .root -}}
{{- $svc := .svc -}}
- name: CLOUDSHELF_LISTEN_ADDR
  value: {{ printf "0.0.0.0:%d" (int $svc.port) | quote }}
{{- range $peer := keys $root.Values.services | sortAlpha }}
{{- if ne $peer $.name }}
{{- $peerSvc := include "cloudshelf.settings" (dict "root" $root "name" $peer) | fromYaml }}
- name: {{ printf "CLOUDSHELF_%s_ADDR" (upper $peer) }}
  value: {{ printf "%s:%d" (include "cloudshelf.componentName" (dict "root" $root "name" $peer)) (int $peerSvc.port) | quote }}
{{- end }}
{{- end }}
- name: CLOUDSHELF_SHUTDOWN_GRACE_SECONDS
  value: {{ $svc.shutdownGraceSeconds | quote }}
- name: CLOUDSHELF_MAX_CONNECTION_AGE_SECONDS
  value: {{ $svc.maxConnectionAgeSeconds | default 0 | quote }}
- name: OTEL_SERVICE_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.labels['app.kubernetes.io/component']
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "service.namespace=cloudshelf,service.version=%s" $root.Chart.AppVersion | quote }}
{{- with $root.Values.otel.exporterOtlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
- name: AWS_REGION
  value: {{ required "aws.region is required" $root.Values.aws.region | quote }}
{{- with $root.Values.aws.endpointUrl }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with $svc.postgres }}
{{- if .existingSecret }}
{{- /* Scoped by service: a process that acts for several services (the CLI) can never
aim one service's migrations at another's database. */}}
- name: {{ printf "CLOUDSHELF_%s_POSTGRES_DSN" (upper $.name) }}
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ required (printf "services.%s.postgres.key is required" $.name) .key }}
{{- end }}
{{- end }}
{{- with $svc.redis }}
{{- if .existingSecret }}
- name: CLOUDSHELF_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ required (printf "services.%s.redis.key is required" $.name) .key }}
{{- else if .url }}
- name: CLOUDSHELF_REDIS_URL
  value: {{ .url | quote }}
{{- end }}
{{- end }}
{{- with $root.Values.pageTokenKey }}
{{- if .existingSecret }}
- name: CLOUDSHELF_PAGE_TOKEN_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ required "pageTokenKey.key is required" .key }}
{{- end }}
{{- end }}
{{- if eq (include "cloudshelf.tlsEnabled" .) "true" }}
{{- $dir := include "cloudshelf.tlsDir" . }}
- name: CLOUDSHELF_TLS_CERT_FILE
  value: {{ printf "%s/tls.crt" $dir | quote }}
- name: CLOUDSHELF_TLS_KEY_FILE
  value: {{ printf "%s/tls.key" $dir | quote }}
{{- /* With a CA the server requires client certificates; without, only peers are verified. */}}
- name: {{ ternary "CLOUDSHELF_TLS_CA_FILE" "CLOUDSHELF_PEER_TLS_CA_FILE" (eq (toString $svc.tls.mutual) "true") }}
  value: {{ printf "%s/ca.crt" $dir | quote }}
- name: CLOUDSHELF_HEALTH_LISTEN_ADDR
  value: {{ printf "0.0.0.0:%d" (int $svc.tls.healthPort) | quote }}
{{- end }}
{{- with $root.Values.auth }}
{{- if .issuer }}
- name: CLOUDSHELF_AUTH_ISSUER
  value: {{ .issuer | quote }}
{{- end }}
{{- if .jwksUrl }}
- name: CLOUDSHELF_AUTH_JWKS_URL
  value: {{ .jwksUrl | quote }}
{{- end }}
{{- if .clientIds }}
- name: CLOUDSHELF_AUTH_CLIENT_IDS
  value: {{ join "," .clientIds | quote }}
{{- end }}
{{- if .tokenUrl }}
- name: CLOUDSHELF_AUTH_TOKEN_URL
  value: {{ .tokenUrl | quote }}
{{- end }}
{{- with .serviceClient }}
{{- if .existingSecret }}
- name: CLOUDSHELF_AUTH_SERVICE_CLIENT_ID
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ required "auth.serviceClient.clientIdKey is required" .clientIdKey }}
- name: CLOUDSHELF_AUTH_SERVICE_CLIENT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ required "auth.serviceClient.clientSecretKey is required" .clientSecretKey }}
{{- end }}
{{- end }}
{{- end }}
{{- range $key, $value := $svc.env }}
- name: {{ $key }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* "true" when the pod serves (a Deployment's, not a Job's) with TLS on. */}}
{{- define "cloudshelf.tlsEnabled" -}}
{{- if and .serving .svc.tls.enabled }}true{{ else }}false{{ end -}}
{{- end -}}

{{- define "cloudshelf.tlsDir" -}}
/etc/cloudshelf/tls
{{- end -}}

{{/* A grpc probe on the service's port; the rest of the probe's fields come from values. */}}
{{- define "cloudshelf.grpcProbe" -}}
grpc:
  port: {{ int .port }}
  service: {{ .probe.service | default "" | quote }}
{{- with omit .probe "service" }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The pod spec fields shared by the Deployments and the hook Jobs. */}}
{{- define "cloudshelf.podCommon" -}}
automountServiceAccountToken: false
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
volumes:
  - name: tmp
    emptyDir:
      {{- with (.svc.tmpSizeLimit | default .root.Values.tmpVolume.sizeLimit) }}
      sizeLimit: {{ . }}
      {{- end }}
{{- if eq (include "cloudshelf.tlsEnabled" .) "true" }}
  # Mounted whole (no subPath), so a renewed Secret reaches the files and the server.
  - name: tls
    secret:
      secretName: {{ .svc.tls.secretName | default (printf "%s-tls" (include "cloudshelf.componentName" .)) }}
      defaultMode: 0440
{{- end }}
{{- with .svc.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .svc.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .svc.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The container fields shared by the Deployments and the hook Jobs. */}}
{{- define "cloudshelf.containerCommon" -}}
image: {{ include "cloudshelf.image" .root }}
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
env:
  {{- include "cloudshelf.env" . | nindent 2 }}
{{- with .svc.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.containerSecurityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- if eq (include "cloudshelf.tlsEnabled" .) "true" }}
  - name: tls
    mountPath: {{ include "cloudshelf.tlsDir" . }}
    readOnly: true
{{- end }}
{{- end -}}


{{/*
The spec of a job's Job (a CronJob's jobTemplate, or the install-time hook Job): the
service's own pod, hardened like the Deployment's. Takes "root", "name" (the service),
"svc" (its settings with the job's resources and env merged in), "job" (the entry merged
with jobDefaults), "jobName" and "labelCtx" (for the pod's labels).
*/}}
{{- define "cloudshelf.jobSpec" -}}
backoffLimit: {{ int .job.backoffLimit }}
activeDeadlineSeconds: {{ int .job.activeDeadlineSeconds }}
template:
  metadata:
    labels:
      {{- include "cloudshelf.labels" .labelCtx | nindent 6 }}
  spec:
    restartPolicy: Never
    serviceAccountName: {{ include "cloudshelf.componentName" . }}
    {{- include "cloudshelf.podCommon" . | nindent 4 }}
    containers:
      - name: {{ .jobName }}
        command:
          {{- toYaml (required (printf "services.%s.jobs.%s.command is required" .name .jobName) .job.command) | nindent 10 }}
        {{- with .job.args }}
        args:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        {{- include "cloudshelf.containerCommon" . | nindent 8 }}
{{- end -}}