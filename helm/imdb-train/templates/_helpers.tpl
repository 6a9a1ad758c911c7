{{/*
Expand the name of the chart.
*/}}
{{- define "imdb-train.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "imdb-train.fullname" -}}
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

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "imdb-train.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "imdb-train.labels" -}}
helm.sh/chart: {{ include "imdb-train.chart" . }}
{{ include "imdb-train.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels
*/}}
{{- define "imdb-train.selectorLabels" -}}
app.kubernetes.io/name: {{ include "imdb-train.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "imdb-train.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "imdb-train.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The run id of this release's Jobs: .Values.runId, else r<revision> (a new Job per upgrade).
*/}}
{{- define "imdb-train.runId" -}}
{{- if .Values.runId }}{{ toString .Values.runId }}{{ else }}{{ printf "r%d" (int .Release.Revision) }}{{ end }}
{{- end }}

{{/*
Job name: <fullname>-<model>-<runId>, checked against the 63-character limit
(indexed pods add -<index>).
Call with (dict "root" $ "model" $model).
*/}}
{{- define "imdb-train.jobName" -}}
{{- $name := printf "%s-%s-%s" (include "imdb-train.fullname" .root) .model (include "imdb-train.runId" .root) }}
{{- $max := 63 }}
{{- if gt (int .root.Values.workers) 1 }}
{{- $max = sub 63 (len (printf "-%d" (sub (int .root.Values.workers) 1))) }}
{{- end }}
{{- if gt (len $name) (int $max) }}
{{- fail (printf "job name %s is longer than %d characters: shorten runId or fullnameOverride" $name (int $max)) }}
{{- end }}
{{- $name }}
{{- end }}

{{- define "imdb-train.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Trainer pod template, shared by the Jobs and the CronJobs.
Call with (dict "root" $ "model" $model "scheduled" bool "jobName" $jobName "labels" $podLabels).
*/}}
{{- define "imdb-train.podTemplate" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
{{- $workers := ternary 1 (int $v.workers) .scheduled }}
metadata:
  labels:
    {{- toYaml .labels | nindent 4 }}
spec:
  restartPolicy: Never
  serviceAccountName: {{ include "imdb-train.serviceAccountName" $root }}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
  {{- if gt $workers 1 }}
  subdomain: {{ .jobName }}
  {{- end }}
  {{- with $v.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    runAsNonRoot: true
    runAsUser: 10001
    runAsGroup: 10001
    fsGroup: 10001
    seccompProfile:
      type: RuntimeDefault
  containers:
    - name: trainer
      image: {{ include "imdb-train.image" $root }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      args:
        - --model
        - {{ .model }}
        - --data
        - {{ $v.data | quote }}
        - --output
        - {{ $v.output | quote }}
        - --run-id
        {{- if .scheduled }}
        - $(IMDB_TRAIN_RUN_ID)
        {{- else }}
        - {{ include "imdb-train.runId" $root | quote }}
        {{- end }}
        - --epochs
        - {{ $v.epochs | quote }}
        - --batch-size
        - {{ $v.batchSize | quote }}
        {{- range (ternary $v.retrain.extraArgs $v.extraArgs .scheduled) }}
        - {{ . | quote }}
        {{- end }}
      env:
        - name: HOME
          value: /cache
        - name: IMDB_TRAIN_CACHE
          value: /cache/imdb-train
        - name: MPLCONFIGDIR
          value: /tmp/matplotlib
        {{- if .scheduled }}
        # A CronJob's Jobs are named <cronjob>-<minute>: that name is the run id, stable across
        # the pod retries of one Job so that a retried pod resumes its own checkpoints.
        - name: IMDB_TRAIN_RUN_ID
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['batch.kubernetes.io/job-name']
        {{- end }}
        {{- if gt $workers 1 }}
        # With JOB_COMPLETION_INDEX (set by Kubernetes) the trainer builds TF_CONFIG from this.
        - name: IMDB_TRAIN_WORKER_HOSTS
          value: {{ include "imdb-train.workerHosts" (dict "jobName" .jobName "workers" $workers) | quote }}
        # A stuck (alive) peer fails the collective after this many seconds.
        - name: IMDB_TRAIN_COLLECTIVE_TIMEOUT
          value: "900"
        {{- end }}
      {{- if gt $workers 1 }}
      ports:
        - name: tf-worker
          containerPort: 2222
      {{- end }}
      resources:
        {{- with $v.resources.requests }}
        requests:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        {{- $limits := deepCopy (default (dict) $v.resources.limits) }}
        {{- if gt (int $v.gpus) 0 }}
        {{- $_ := set $limits "nvidia.com/gpu" (toString $v.gpus) }}
        {{- end }}
        {{- with $limits }}
        limits:
          {{- toYaml . | nindent 10 }}
        {{- end }}
      securityContext:
        allowPrivilegeEscalation: false
        capabilities:
          drop: [ALL]
        readOnlyRootFilesystem: true
        runAsNonRoot: true
        runAsUser: 10001
        runAsGroup: 10001
        seccompProfile:
          type: RuntimeDefault
      volumeMounts:
        - name: tmp
          mountPath: /tmp
        - name: cache
          mountPath: /cache
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: {{ $v.tmpSizeLimit }}
    - name: cache
      emptyDir:
        sizeLimit: {{ $v.cacheSizeLimit }}
{{- end }}

{{- define "imdb-train.workerHosts" -}}
{{- $hosts := list }}
{{- range $i := until (int .workers) }}
{{- $hosts = append $hosts (printf "%s-%d.%s:2222" $.jobName $i $.jobName) }}
{{- end }}
{{- join "," $hosts }}
{{- end }}

{{/*
Job spec shared by Jobs and CronJob job templates.
Call with (dict "root" $ "model" $model "scheduled" bool "jobName" $jobName "labels" $podLabels).
*/}}
{{- define "imdb-train.jobSpec" -}}
{{- $v := .root.Values }}
{{- $workers := ternary 1 (int $v.workers) .scheduled }}
{{- if gt $workers 1 }}
# One synchronous all-reduce group: the first worker failure fails the Job (Kubernetes stops
# the other workers) and the whole group is re-run, resuming from checkpoints.
backoffLimit: 0
completionMode: Indexed
completions: {{ $workers }}
parallelism: {{ $workers }}
{{- else }}
backoffLimit: {{ $v.backoffLimit }}
{{- end }}
podFailurePolicy:
  rules:
    # Preemption, node drain, eviction: not the trainer's fault; do not count it.
    - action: Ignore
      onPodConditions:
        - type: DisruptionTarget
          status: "True"
    # Exit 2 = bad input: permanent, retrying cannot help. Exit 75 (preempted) counts normally.
    - action: FailJob
      onExitCodes:
        containerName: trainer
        operator: In
        values: [2]
# Never two pods for one index: the old one may still be writing its checkpoint.
podReplacementPolicy: Failed
{{- with $v.activeDeadlineSeconds }}
activeDeadlineSeconds: {{ . }}
{{- end }}
{{- if kindIs "invalid" $v.ttlSecondsAfterFinished | not }}
ttlSecondsAfterFinished: {{ $v.ttlSecondsAfterFinished }}
{{- end }}
template:
  {{- include "imdb-train.podTemplate" . | nindent 2 }}
{{- end }}

{{/*
Name of the submitter ServiceAccount, Role and RoleBinding (fullname cut so the suffix fits 63).
*/}}
{{- define "imdb-train.submitterName" -}}
{{- printf "%s-submitter" (include "imdb-train.fullname" . | trunc 53 | trimSuffix "-") }}
{{- end }}
