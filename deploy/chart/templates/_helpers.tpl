{{/* Labels every object carries. */}}
{{- define "federate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: federate
app.kubernetes.io/version: {{ include "federate.tag" . | quote }}
{{- end -}}

{{/* The one image tag of both images. */}}
{{- define "federate.tag" -}}
{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The image of a program: REPOSITORY/NAME:TAG. */}}
{{- define "federate.image" -}}
{{ printf "%s/%s:%s" (trimSuffix "/" .root.Values.image.repository) .name (include "federate.tag" .root) }}
{{- end -}}

{{/* The pods' security context: non-root, as the images' user. */}}
{{- define "federate.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "federate.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Liveness, readiness and startup probes of the hub and control plane:
/livez and /readyz on the metrics port, and the kubelet's gRPC probe of the
standard gRPC health service there (its "liveness" service follows /livez)
while the process starts. */}}
{{- define "federate.probes" -}}
livenessProbe:
  httpGet:
    path: /livez
    port: http-metrics
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: http-metrics
  periodSeconds: 5
startupProbe:
{{- if .Values.probes.grpc.enabled }}
  grpc:
    port: {{ .Values.metrics.port }}
    service: liveness
{{- else }}
  httpGet:
    path: /livez
    port: http-metrics
{{- end }}
  periodSeconds: 2
  failureThreshold: 60
{{- end -}}

{{/* Spreads a workload's pods over nodes where it can. */}}
{{- define "federate.spread" -}}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            app.kubernetes.io/name: {{ .name }}
            app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* A volume claim template for a StatefulSet's data directory. */}}
{{- define "federate.volumeClaim" -}}
- metadata:
    name: data
  spec:
    accessModes: [ReadWriteOnce]
    {{- with .storageClass }}
    storageClassName: {{ . }}
    {{- end }}
    resources:
      requests:
        storage: {{ .size }}
{{- end -}}
