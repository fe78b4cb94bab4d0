{{/* Names and labels shared by every resource. */}}
{{- define "ecr-gateway.name" -}}
{{- printf "%s" .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}

{{- define "ecr-gateway.labels" -}}
app.kubernetes.io/name: ecr-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ecr-gateway.selector" -}}
app.kubernetes.io/name: ecr-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ecr-gateway.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "ecr-gateway.redisHost" -}}
{{ include "ecr-gateway.name" . }}-redis
{{- end -}}

{{/* An HTTP check run inside the container: a loopback listener is out of the kubelet's
reach. Over HTTPS when the gateway serves it (config.tls), its certificate unchecked as the
kubelet's own HTTPS probes leave it: it names the registry's public host, not 127.0.0.1. */}}
{{- define "ecr-gateway.execProbe" -}}
exec:
  {{- if .tls }}
  command: ["python3", "-c", "import ssl, urllib.request as u; u.urlopen('https://127.0.0.1:{{ .port }}{{ .path }}', timeout=2, context=ssl._create_unverified_context())"]
  {{- else }}
  command: ["python3", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:{{ .port }}{{ .path }}', timeout=2)"]
  {{- end }}
{{- end -}}

{{/* "true" when the gateway serves HTTPS on its port (config.tls), else nothing: it answers
no plain HTTP there, so its probes must speak TLS. */}}
{{- define "ecr-gateway.tls" -}}
{{- $tls := .Values.config.tls | default dict -}}
{{- if $tls.cert_file -}}true{{- end -}}
{{- end -}}

{{- define "ecr-gateway.port" -}}
{{- (splitList ":" (.Values.config.listen | default "127.0.0.1:5000")) | last -}}
{{- end -}}

{{- define "ecr-gateway.loopback" -}}
{{- include "ecr-gateway.loopbackAddress" (.Values.config.listen | default "127.0.0.1:5000") -}}
{{- end -}}

{{/* "true" when a listen address (host:port) is this machine's loopback, else nothing. */}}
{{- define "ecr-gateway.loopbackAddress" -}}
{{- if or (hasPrefix "127." .) (hasPrefix "[::1]:" .) (hasPrefix "localhost:" .) -}}true{{- end -}}
{{- end -}}

{{/* The metrics port when the shared shape's config.metrics_listen is on the pod's
address (other pods can reach it; no login there): empty otherwise. */}}
{{- define "ecr-gateway.metricsPort" -}}
{{- $listen := .Values.config.metrics_listen | default "" -}}
{{- if and (eq .Values.shape "shared") $listen (not (include "ecr-gateway.loopbackAddress" $listen))
      (not (hasPrefix "[::1]" $listen)) (not (hasPrefix "localhost:" $listen)) -}}
{{- splitList ":" $listen | last -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the Redis password the gateway reads: the chart's own Redis's, or
that of a Redis of the user's own (redis.externalSecret); empty: none. */}}
{{- define "ecr-gateway.redisSecret" -}}
{{- if .Values.redis.enabled -}}
{{ .Values.redis.existingSecret }}
{{- else -}}
{{ .Values.redis.externalSecret | default "" }}
{{- end -}}
{{- end -}}

{{/* The gateway container, the same in every shape. */}}
{{- define "ecr-gateway.container" -}}
- name: ecr-gateway
  image: {{ include "ecr-gateway.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if eq .Values.shape "sidecar" }}
  restartPolicy: Always
  {{- end }}
  {{- $state := .Values.config.state | default dict }}
  {{- $peer := and (eq .Values.shape "shared") (eq ($state.backend | default "") "redis")
                   (not $state.peer_url) (not (include "ecr-gateway.tls" .)) }}
  {{- if or (include "ecr-gateway.redisSecret" .) $peer }}
  env:
    {{- if include "ecr-gateway.redisSecret" . }}
    # The password is read from the mounted Secret: an environment variable or a URL holding
    # it would show in the pod spec's environment, /proc and any config dump.
    {{- if .Values.redis.enabled }}
    - name: ECR_GATEWAY_STATE__REDIS_URL
      value: "redis://{{ include "ecr-gateway.redisHost" . }}:6379/0"
    {{- end }}
    - name: ECR_GATEWAY_STATE__REDIS_PASSWORD_FILE
      value: /etc/ecr-gateway-redis/password
    {{- end }}
    {{- if $peer }}
    # How the other replicas reach this one (blobs staged here, read through it): on a
    # wildcard listener the gateway cannot tell. Over TLS the certificate names the public
    # host, not a pod's address: set config.state.peer_url then.
    - name: POD_IP
      valueFrom:
        fieldRef: {fieldPath: status.podIP}
    - name: ECR_GATEWAY_STATE__PEER_URL
      value: "http://$(POD_IP):{{ include "ecr-gateway.port" . }}"
    {{- end }}
  {{- end }}
  ports:
    - name: registry
      containerPort: {{ include "ecr-gateway.port" . | int }}
      protocol: TCP
    {{- with include "ecr-gateway.metricsPort" . }}
    - name: metrics  # metrics_listen
      containerPort: {{ . | int }}
      protocol: TCP
    {{- end }}
  {{- $port := include "ecr-gateway.port" . }}
  {{- $tls := include "ecr-gateway.tls" . }}
  {{- $scheme := ternary "HTTPS" "HTTP" (eq $tls "true") }}
  {{- if include "ecr-gateway.loopback" . }}
  startupProbe:
    {{- include "ecr-gateway.execProbe" (dict "port" $port "path" "/healthz" "tls" $tls) | nindent 4 }}
    periodSeconds: 1
    failureThreshold: 30
  readinessProbe:
    {{- include "ecr-gateway.execProbe" (dict "port" $port "path" "/readyz" "tls" $tls) | nindent 4 }}
    periodSeconds: 5
    timeoutSeconds: 3
  livenessProbe:
    {{- include "ecr-gateway.execProbe" (dict "port" $port "path" "/healthz" "tls" $tls) | nindent 4 }}
    periodSeconds: 10
    timeoutSeconds: 3
  {{- else }}
  # The kubelet checks no certificate of an HTTPS probe.
  startupProbe:
    httpGet: {path: /healthz, port: registry, scheme: {{ $scheme }}}
    periodSeconds: 1
    failureThreshold: 30
  readinessProbe:
    httpGet: {path: /readyz, port: registry, scheme: {{ $scheme }}}
    periodSeconds: 5
    timeoutSeconds: 3
  livenessProbe:
    httpGet: {path: /healthz, port: registry, scheme: {{ $scheme }}}
    periodSeconds: 10
    timeoutSeconds: 3
  {{- end }}
  lifecycle:
    preStop:
      sleep:
        seconds: {{ .Values.preStopSeconds }}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 10001
    runAsGroup: 10001
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities:
      drop: ["ALL"]
    # here, not only in the pod: the sidecar snippet joins pods this chart does not write
    seccompProfile: {type: RuntimeDefault}
  volumeMounts:
    - name: gateway-config
      mountPath: /etc/ecr-gateway
      readOnly: true
    {{- if .Values.auth.existingSecret }}
    - name: gateway-auth
      mountPath: /etc/ecr-gateway-auth
      readOnly: true
    {{- end }}
    {{- if include "ecr-gateway.redisSecret" . }}
    - name: redis-password
      mountPath: /etc/ecr-gateway-redis
      readOnly: true
    {{- end }}
    - name: gateway-data
      mountPath: /var/lib/ecr-gateway
    - name: gateway-tmp
      mountPath: /tmp
{{- end -}}

{{- define "ecr-gateway.volumes" -}}
- name: gateway-config
  configMap:
    name: {{ include "ecr-gateway.name" . }}-config
{{- if .Values.auth.existingSecret }}
- name: gateway-auth
  secret:
    secretName: {{ .Values.auth.existingSecret }}
    defaultMode: 0400
{{- end }}
{{- with include "ecr-gateway.redisSecret" . }}
- name: redis-password
  secret:
    secretName: {{ . }}
    defaultMode: 0400
    items:
      - {key: {{ $.Values.redis.passwordKey }}, path: password}
{{- end }}
- name: gateway-data
  emptyDir:
    sizeLimit: {{ .Values.dataSizeLimit }}
- name: gateway-tmp
  emptyDir:
    medium: Memory
    sizeLimit: 64Mi
{{- end -}}
