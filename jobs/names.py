"""The Kubernetes names this project uses: label keys, API groups and versions, the trainer
container's name, user and paths. Constants only (the labels of an object: jobs.manifest)."""

from __future__ import annotations

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_VERSION = "app.kubernetes.io/version"
LABEL_MODEL = "imdb-train/model"
LABEL_RUN_ID = "imdb-train/run-id"
# Set by the Job controller on every pod it creates (Kubernetes >= 1.27).
LABEL_JOB_NAME = "batch.kubernetes.io/job-name"
# The annotation of an Indexed Job's pod that says its worker index (0: the chief).
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
# Kueue's LocalQueue label; Kueue admits such a Job by unsuspending it.
LABEL_QUEUE = "kueue.x-k8s.io/queue-name"
# Kueue's WorkloadPriorityClass of a queued Job (its order in the queue, and preemption).
LABEL_PRIORITY_CLASS = "kueue.x-k8s.io/priority-class"
# Set by the JobSet controller on its child Jobs and their pods.
LABEL_JOBSET_NAME = "jobset.sigs.k8s.io/jobset-name"
JOBSET_GROUP = "jobset.x-k8s.io"
JOBSET_VERSION = "v1alpha2"
JOBSET_PLURAL = "jobsets"
# Kueue's API as jobs.status reads it and docs/kueue.yaml writes it (v1beta2: Kueue >= 0.15;
# v1beta1 is deprecated there).
KUEUE_GROUP = "kueue.x-k8s.io"
KUEUE_VERSION = "v1beta2"

APP_NAME = "imdb-train"
MANAGED_BY = "imdb-train-submit"
CONTAINER_NAME = "trainer"
COLLECTIVE_TIMEOUT = "900"  # seconds; well above the slowest checkpoint upload

UID = 10001  # the image's non-root user (see Dockerfile)
TMP_DIR = "/tmp"
CACHE_DIR = "/cache"
# Scheduled runs promote only a model at least as good as the current latest (no slow drift).
SCHEDULED_TOLERANCE = "0"

# The oldest JobSet whose API knows every field we render: failurePolicy.rules[]
# .onJobFailureMessagePatterns came in v0.10.0 (an older server, without strict field
# validation, drops it and restarts on bad input without bound).
JOBSET_MIN_RELEASE = "v0.10.0"
JOBSET_NEWER_FIELDS = ("onJobFailureMessagePatterns",)
