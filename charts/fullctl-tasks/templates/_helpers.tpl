{{/* vim: set filetype=mustache: */}}

{{/* Chart name (app.kubernetes.io/name). */}}
{{- define "fullctl-tasks.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix: the release name, plus the chart name unless the release name holds it. */}}
{{- define "fullctl-tasks.fullname" -}}
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

{{- define "fullctl-tasks.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels. Args: dict "ctx" $ "component" "web" ["pool" "name"].
*/}}
{{- define "fullctl-tasks.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fullctl-tasks.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- if .pool }}
tasks.fullctl.io/pool: {{ .pool }}
{{- end }}
{{- end }}

{{/*
Standard labels. Args: dict "ctx" $ "component" "web" ["pool" "name"].
*/}}
{{- define "fullctl-tasks.labels" -}}
{{ include "fullctl-tasks.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: fullctl-tasks
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ include "fullctl-tasks.chart" .ctx }}
{{- end }}

{{/* Name of a poller pool's Deployment (and of its TaskPool and PDB). Args: dict "ctx" $ "pool" $pool. */}}
{{- define "fullctl-tasks.pollerName" -}}
{{- printf "%s-poller-%s" (include "fullctl-tasks.fullname" .ctx) .pool.name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fullctl-tasks.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* ---------------------------------------------------------------- pools */}}

{{/*
Deep merge for values: maps merge key by key, anything else in "override" replaces "base"
(false and 0 included, unlike sprig's merge). Args: dict "base" {...} "override" {...}; returns JSON.
*/}}
{{- define "fullctl-tasks.deepMerge" -}}
{{- $out := deepCopy .base }}
{{- range $key, $value := .override }}
{{- if and (kindIs "map" $value) (kindIs "map" (index $out $key)) }}
{{- $_ := set $out $key (include "fullctl-tasks.deepMerge" (dict "base" (index $out $key) "override" $value) | fromJson) }}
{{- else }}
{{- $_ := set $out $key $value }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
The poller pools: each entry of .Values.pollers merged over .Values.pollerDefaults.
Returns JSON {"pools": [...]}; use: (include "fullctl-tasks.pools" . | fromJson).pools
*/}}
{{- define "fullctl-tasks.pools" -}}
{{- $pools := list }}
{{- range .Values.pollers }}
{{- $pools = append $pools (include "fullctl-tasks.deepMerge" (dict "base" $.Values.pollerDefaults "override" .) | fromJson) }}
{{- end }}
{{- toJson (dict "pools" $pools) }}
{{- end }}

{{/* ---------------------------------------------------------------- secrets */}}

{{/* "true" when the chart runs its own PostgreSQL. */}}
{{- define "fullctl-tasks.bundledPostgresql" -}}
{{- if and .Values.database.postgresql.enabled (not .Values.database.existingSecret) }}true{{ end }}
{{- end }}

{{/* "true" when the chart renders its own Secret (generated secret key and/or bundled database). */}}
{{- define "fullctl-tasks.generatedSecret" -}}
{{- if or (include "fullctl-tasks.bundledPostgresql" .) (not .Values.secretKey.existingSecret) }}true{{ end }}
{{- end }}

{{- define "fullctl-tasks.databaseSecretName" -}}
{{- if .Values.database.existingSecret }}{{ .Values.database.existingSecret }}{{ else }}{{ include "fullctl-tasks.fullname" . }}{{ end }}
{{- end }}

{{- define "fullctl-tasks.databaseSecretKey" -}}
{{- if .Values.database.existingSecret }}{{ .Values.database.key }}{{ else }}DATABASE_URL{{ end }}
{{- end }}

{{- define "fullctl-tasks.secretKeySecretName" -}}
{{- if .Values.secretKey.existingSecret }}{{ .Values.secretKey.existingSecret }}{{ else }}{{ include "fullctl-tasks.fullname" . }}{{ end }}
{{- end }}

{{- define "fullctl-tasks.secretKeySecretKey" -}}
{{- if .Values.secretKey.existingSecret }}{{ .Values.secretKey.key }}{{ else }}DJANGO_SECRET_KEY{{ end }}
{{- end }}

{{- define "fullctl-tasks.postgresqlName" -}}
{{- printf "%s-postgresql" (include "fullctl-tasks.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
"true" when templates are rendered against a live cluster (helm install/upgrade), empty when
rendered offline (helm template, helm lint, --dry-run=client), where `lookup` answers nothing.
Listing the Secrets of the release namespace is what Helm's own release storage needs, so any
user who can install a release may do it; a real cluster always answers a list (maybe empty).
*/}}
{{- define "fullctl-tasks.liveCluster" -}}
{{- if (lookup "v1" "Secret" .Release.Namespace "") }}true{{ end }}
{{- end }}

{{/*
A generated secret value. Args: dict "old" (the existing Secret's data) "key" "given" "length"
"live" "offline". Order: the value given in values; the value the existing Secret already has
(kept across upgrades and re-installs); a new random value in a live cluster; a fixed,
documented placeholder when rendered offline (so `helm template` output is reproducible).
*/}}
{{- define "fullctl-tasks.secretValue" -}}
{{- if .given }}
{{- .given }}
{{- else if hasKey .old .key }}
{{- index .old .key | b64dec }}
{{- else if .live }}
{{- randAlphaNum (int .length) }}
{{- else }}
{{- .offline }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------------- pod pieces */}}

{{/* Pod-level securityContext of the restricted Pod Security profile. */}}
{{- define "fullctl-tasks.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container-level securityContext of the restricted Pod Security profile. */}}
{{- define "fullctl-tasks.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
{{- end }}

{{/* Scheduling and pull settings shared by every pod. */}}
{{- define "fullctl-tasks.podScheduling" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "fullctl-tasks.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- end }}

{{- define "fullctl-tasks.tmpVolumeMount" -}}
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* DJANGO_ALLOWED_HOSTS: the configured hosts, plus localhost (the web probes' Host) unless "*". */}}
{{- define "fullctl-tasks.allowedHosts" -}}
{{- $hosts := .Values.allowedHosts }}
{{- if not (or (has "*" $hosts) (has "localhost" $hosts)) }}
{{- $hosts = append $hosts "localhost" }}
{{- end }}
{{- join "," $hosts }}
{{- end }}

{{/*
Environment of every Django container: settings, secrets (from Secrets only), then the
component's own variables, then extraEnv. Args: dict "ctx" $ ["env" (list of EnvVar dicts)].
*/}}
{{- define "fullctl-tasks.env" -}}
{{- $ctx := .ctx -}}
- name: DJANGO_SETTINGS_MODULE
  value: {{ $ctx.Values.settingsModule | quote }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "fullctl-tasks.databaseSecretName" $ctx }}
      key: {{ include "fullctl-tasks.databaseSecretKey" $ctx }}
- name: DJANGO_SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "fullctl-tasks.secretKeySecretName" $ctx }}
      key: {{ include "fullctl-tasks.secretKeySecretKey" $ctx }}
- name: DJANGO_ALLOWED_HOSTS
  value: {{ include "fullctl-tasks.allowedHosts" $ctx | quote }}
- name: DJANGO_DEBUG
  value: {{ ternary "1" "0" $ctx.Values.debug | quote }}
- name: LOG_LEVEL
  value: {{ $ctx.Values.logLevel | quote }}
{{- if not (kindIs "invalid" $ctx.Values.taskTrackIntervalSeconds) }}
- name: TASK_TRACK_INTERVAL_SECONDS
  value: {{ $ctx.Values.taskTrackIntervalSeconds | int | quote }}
{{- end }}
{{- with $ctx.Values.retention }}
- name: TASK_RETENTION
  value: {{ toJson . | quote }}
{{- end }}
{{- with .env }}
{{ toYaml . }}
{{- end }}
{{- with $ctx.Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Python that waits until Django can connect to the database (the migration Job's init container).
*/}}
{{- define "fullctl-tasks.waitForDatabaseScript" -}}
import os, sys, time
import django
django.setup()
from django.db import connection
deadline = time.monotonic() + float(os.environ["WAIT_FOR_DATABASE_SECONDS"])
while True:
    try:
        connection.ensure_connection()
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        if time.monotonic() >= deadline:
            sys.exit(f"fullctl-tasks: the database is still unreachable: {reason}")
        print(f"fullctl-tasks: waiting for the database: {reason}", flush=True)
        time.sleep(3)
    else:
        print("fullctl-tasks: the database accepts connections", flush=True)
        break
{{- end }}

{{/*
Init container that waits until the database schema is current (`manage.py migrate --check`), so
that no Django process starts against an unmigrated database: needed where the migration Job runs
beside the pods (the bundled PostgreSQL's first install, the plain manifests in k8s/), harmless
(one quick check) where the migration hook ran before them. Args: dict "ctx" $ "resources" {...}.
*/}}
{{- define "fullctl-tasks.waitForMigrations" -}}
{{- if .ctx.Values.migrate.waitInPods }}
- name: wait-for-migrations
  image: {{ include "fullctl-tasks.image" .ctx }}
  imagePullPolicy: {{ .ctx.Values.image.pullPolicy }}
  command:
    - /bin/sh
    - -c
    - |
      trap 'exit 143' TERM INT
      until python manage.py migrate --check >/tmp/migrate-check.log 2>&1; do
        printf 'fullctl-tasks: waiting for the database schema (manage.py migrate --check): '
        tail -n 1 /tmp/migrate-check.log
        sleep 5 & wait $!
      done
  env:
    {{- include "fullctl-tasks.env" (dict "ctx" .ctx) | nindent 4 }}
  securityContext:
    {{- include "fullctl-tasks.containerSecurityContext" .ctx | nindent 4 }}
  resources:
    {{- toYaml .resources | nindent 4 }}
  volumeMounts:
    {{- include "fullctl-tasks.tmpVolumeMount" .ctx | nindent 4 }}
{{- end }}
{{- end }}

{{/*
"true" when the migration Job is a plain resource of the release instead of a hook: the first
install with the bundled PostgreSQL, whose database only exists once the release's resources are
created (a pre-install hook would wait for it forever; a post-install hook would deadlock
`helm install --wait`, which waits for pods that wait for the migration).
*/}}
{{- define "fullctl-tasks.migrateInstallJob" -}}
{{- if and (include "fullctl-tasks.bundledPostgresql" .) .Release.IsInstall }}true{{ end }}
{{- end }}

{{/* ---------------------------------------------------------------- checks */}}

{{/* Refuse value combinations the schema cannot express. Included once, by the web Deployment. */}}
{{- define "fullctl-tasks.validate" -}}
{{- if and .Values.database.existingSecret .Values.database.postgresql.enabled }}
{{- fail "database: set either database.existingSecret (your PostgreSQL) or database.postgresql.enabled (the bundled one), not both" }}
{{- end }}
{{- if and (not .Values.database.existingSecret) (not .Values.database.postgresql.enabled) }}
{{- fail "database: set database.existingSecret to a Secret holding DATABASE_URL, or enable database.postgresql" }}
{{- end }}
{{- $seen := dict }}
{{- range (include "fullctl-tasks.pools" . | fromJson).pools }}
{{- if hasKey $seen .name }}
{{- fail (printf "pollers: the pool name %q is used twice" .name) }}
{{- end }}
{{- $_ := set $seen .name true }}
{{- if and .autoscale.enabled (gt (int .autoscale.minReplicas) (int .autoscale.maxReplicas)) }}
{{- fail (printf "pollers[%s].autoscale: minReplicas (%d) is above maxReplicas (%d)" .name (int .autoscale.minReplicas) (int .autoscale.maxReplicas)) }}
{{- end }}
{{- if .autoscale.keda.enabled }}
{{- if not .autoscale.enabled }}
{{- fail (printf "pollers[%s].autoscale.keda: KEDA sizes autoscaled pools only; set autoscale.enabled too" .name) }}
{{- end }}
{{- if not .autoscale.ops }}
{{- fail (printf "pollers[%s].autoscale.keda: list the pool's ops in autoscale.ops (KEDA's query cannot evaluate task qualifiers)" .name) }}
{{- end }}
{{- if gt (int .autoscale.scaleDownDelaySeconds) 3600 }}
{{- fail (printf "pollers[%s].autoscale.keda: scaleDownDelaySeconds (%d) is above 3600, the HPA's longest stabilization window" .name (int .autoscale.scaleDownDelaySeconds)) }}
{{- end }}
{{- if and .autoscale.keda.connectionSecret.name (not .autoscale.keda.connectionSecret.key) }}
{{- fail (printf "pollers[%s].autoscale.keda.connectionSecret: give the key too" .name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------------- metrics */}}

{{/*
A pod's annotations: podAnnotations, plus Prometheus' scrape annotations for /metrics on "port"
when metrics.enabled and metrics.scrapeAnnotations. Args: dict "ctx" $ "port" N.
*/}}
{{- define "fullctl-tasks.podAnnotations" -}}
{{- $annotations := deepCopy (.ctx.Values.podAnnotations | default dict) }}
{{- if and .ctx.Values.metrics.enabled .ctx.Values.metrics.scrapeAnnotations }}
{{- $_ := set $annotations "prometheus.io/scrape" "true" }}
{{- $_ := set $annotations "prometheus.io/port" (.port | toString) }}
{{- $_ := set $annotations "prometheus.io/path" "/metrics" }}
{{- end }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------------- KEDA */}}

{{/*
The KEDA trigger's query for a pool's ops (a list): the same count as the operator's
(django_fullctl.queue.TaskQueue.counts_by_op), runnable pending (not waiting for a parent, not
scheduled for later) plus running tasks. Ops are quoted as SQL string literals.
*/}}
{{- define "fullctl-tasks.kedaQuery" -}}
{{- $ops := list }}
{{- range . }}{{ $ops = append $ops (printf "'%s'" (replace "'" "''" .)) }}{{ end }}
{{- printf "SELECT count(*) FROM django_fullctl_task WHERE op IN (%s) AND (status = 'running' OR (status = 'pending' AND NOT waiting AND NOT scheduled))" (join ", " $ops) }}
{{- end }}
