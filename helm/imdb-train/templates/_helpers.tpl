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
The trainer's ServiceAccount: serviceAccount.name, `imdb-train` unless set, whatever the
release is called, so `jobs.submit --service-account` (same default), the NOTES and the
Workload Identity principal in the docs all name the same account.
*/}}
{{- define "imdb-train.serviceAccountName" -}}
{{- default "imdb-train" .Values.serviceAccount.name }}
{{- end }}

{{- define "imdb-train.image" -}}
{{- $repo := required "image.repository is required: build and push the trainer image (make image; make push IMAGE=REGISTRY/imdb-train:TAG), then --set image.repository=REGISTRY/imdb-train" .Values.image.repository }}
{{- $tag := default .Chart.AppVersion .Values.image.tag | trimPrefix "@" }}
{{- if hasPrefix "sha256:" $tag }}
{{- printf "%s@%s" $repo $tag }}
{{- else }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}
{{- end }}

{{/*
The `helm test` pod's image: the trainer image's CPU variant (its tag + "-cpu") unless set.
*/}}
{{- define "imdb-train.testImage" -}}
{{- $_ := include "imdb-train.image" . }}{{/* image.repository is required here too */}}
{{- $t := .Values.tests.image | default dict }}
{{- $repo := $t.repository | default .Values.image.repository }}
{{- $tag := $t.tag | trimPrefix "@" }}
{{- if not $tag }}
{{- $base := default .Chart.AppVersion .Values.image.tag | trimPrefix "@" }}
{{- if hasPrefix "sha256:" $base }}
{{- fail "tests.image.tag is required when image.tag is a digest: the digest of the CPU image (make image-cpu), or --set tests.enabled=false" }}
{{- end }}
{{- $tag = printf "%s-cpu" $base }}
{{- end }}
{{- if hasPrefix "sha256:" $tag }}
{{- printf "%s@%s" $repo $tag }}
{{- else }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}
{{- end }}

{{- define "imdb-train.output" -}}
{{- $out := required "output is required: --set output=gs://YOUR-BUCKET/imdb (a bucket the trainer's Workload Identity can write)" .Values.output }}
{{- if not (hasPrefix "gs://" $out) }}
{{- fail (printf "output %s: expected gs://bucket/prefix (pods have a read-only root filesystem and lose local files)" $out) }}
{{- end }}
{{- $out }}
{{- end }}

{{/*
Trainer pod template of scheduled Jobs (and of Jobs made with kubectl create job --from).
Call with (dict "root" $ "model" $model "labels" $podLabels).
*/}}
{{- define "imdb-train.podTemplate" -}}
{{- $root := .root }}
{{- $v := $root.Values }}
metadata:
  labels:
    {{- toYaml (merge (deepCopy .labels) $v.podLabels) | nindent 4 }}
  {{- with $v.podAnnotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  restartPolicy: Never
  serviceAccountName: {{ include "imdb-train.serviceAccountName" $root }}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
  {{- with $v.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- $selector := deepCopy ($v.nodeSelector | default dict) }}
  {{- if gt (int $v.gpus) 0 }}
  {{- $acc := required "accelerator is required when gpus > 0: --set accelerator=nvidia-l4 (or nvidia-tesla-t4, nvidia-h100-80gb, ...), the GPU type GKE schedules on; or --set gpus=0" $v.accelerator }}
  {{- $_ := set $selector "cloud.google.com/gke-accelerator" $acc }}
  {{- end }}
  {{- with $selector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.affinity }}
  affinity:
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
        - {{ include "imdb-train.output" $root | quote }}
        - --run-id
        - $(IMDB_TRAIN_RUN_ID)
        - --epochs
        - {{ $v.epochs | quote }}
        - --batch-size
        - {{ $v.batchSize | quote }}
        - --tolerance
        - {{ $v.retrain.tolerance | toString | quote }}
        - --seed
        - "-1"
        {{- range $v.retrain.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      env:
        - name: HOME
          value: /cache
        - name: IMDB_TRAIN_CACHE
          value: /cache/imdb-train
        - name: MPLCONFIGDIR
          value: /tmp/matplotlib
        # The image this pod runs, recorded in the run's config.json.
        - name: IMDB_TRAIN_IMAGE_REF
          value: {{ include "imdb-train.image" $root | quote }}
        # TensorFlow sizes its thread pools to the node's cores; a CPU limit on a big node
        # would then throttle it. The limit, rounded up, sets the pools instead.
        - name: TF_NUM_INTRAOP_THREADS
          valueFrom:
            resourceFieldRef:
              containerName: trainer
              resource: limits.cpu
        - name: TF_NUM_INTEROP_THREADS
          value: "2"
        # The GPUs this pod asked for: the trainer refuses to train on fewer (exit 77).
        - name: IMDB_TRAIN_GPUS
          value: {{ $v.gpus | toString | quote }}
        # Where it ran, for metrics.json's cost: the node and what the pod selected of it.
        - name: IMDB_TRAIN_NODE_NAME
          valueFrom:
            fieldRef:
              fieldPath: spec.nodeName
        - name: IMDB_TRAIN_NODE_ACCELERATOR
          value: {{ if gt (int $v.gpus) 0 }}{{ $v.accelerator | quote }}{{ else }}""{{ end }}
        - name: IMDB_TRAIN_NODE_SPOT
          value: {{ eq (toString (index ($v.nodeSelector | default dict) "cloud.google.com/gke-spot")) "true" | toString | quote }}
        # A CronJob's Jobs are named <cronjob>-<minute>: that name is the run id, stable across
        # the pod retries of one Job so that a retried pod resumes its own checkpoints.
        - name: IMDB_TRAIN_RUN_ID
          valueFrom:
            fieldRef:
              fieldPath: metadata.labels['batch.kubernetes.io/job-name']
        {{- with $v.extraEnv }}
        {{- toYaml . | nindent 8 }}
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
        - name: dshm
          mountPath: /dev/shm
        {{- with $v.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: {{ $v.tmpSizeLimit }}
    - name: cache
      emptyDir:
        sizeLimit: {{ $v.cacheSizeLimit }}
    - name: dshm
      emptyDir:
        medium: Memory
        sizeLimit: {{ $v.shmSizeLimit }}
    {{- with $v.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/*
Job spec of the CronJobs' job template (no TTL: the history limits prune scheduled Jobs).
Call with (dict "root" $ "model" $model "labels" $podLabels).
*/}}
{{- define "imdb-train.jobSpec" -}}
{{- $v := .root.Values }}
backoffLimit: {{ $v.backoffLimit }}
podFailurePolicy:
  rules:
    # Preemption, node drain, eviction: not the trainer's fault; do not count it.
    - action: Ignore
      onPodConditions:
        - type: DisruptionTarget
          status: "True"
    # Exit 76: a worker stopped because a peer was preempted; not counted either.
    - action: Ignore
      onExitCodes:
        containerName: trainer
        operator: In
        values: [76]
    # Exit 78: the worker group never formed (a peer Pending); nothing trained, not counted.
    - action: Ignore
      onExitCodes:
        containerName: trainer
        operator: In
        values: [78]
    # Exit 2 = bad input, 3 = the loss diverged: permanent, retrying cannot help.
    # Exit 75 (preempted) counts normally.
    - action: FailJob
      onExitCodes:
        containerName: trainer
        operator: In
        values: [2, 3]
    # Exit 77: the node lacks the GPUs asked for (driver, device plugin); counted, retried.
    - action: Count
      onExitCodes:
        containerName: trainer
        operator: In
        values: [77]
# Never two pods for one index: the old one may still be writing its checkpoint.
podReplacementPolicy: Failed
{{- with $v.activeDeadlineSeconds }}
activeDeadlineSeconds: {{ . }}
{{- end }}
{{- if $v.queue }}
# Kueue admits the Job by unsuspending it once its LocalQueue has quota.
suspend: true
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
