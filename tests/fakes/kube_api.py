"""A fake Kubernetes API server on 127.0.0.1 that behaves like the real one where we depend on it.

Served to the official `kubernetes` Python client, the real `helm` and `kubectl`: discovery
(/api, /apis, /version), core/v1, batch/v1 and rbac/v1 objects, list/get/watch/create/update/
patch (JSON, merge, strategic merge, server-side apply)/delete, Status errors, label and field
selectors, watches that may end with 410 Gone, pod logs (follow, tailLines, 400 before the
container starts), admission (Pod Security `restricted`, missing ServiceAccounts), immutable Job
fields, and garbage collection honouring propagationPolicy, asynchronously like the real one.

A fake Job controller and kubelet move pods Pending (ContainerCreating, or ImagePullBackOff, or
Unschedulable) -> Running -> Succeeded/Failed as a `Script` says, with one pod per index for
Indexed Jobs (completion-index annotation, hostname, subdomain), podFailurePolicy and
backoffLimit, suspended Jobs that start pods only when resumed, and Events like the real
components write them.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

from tests.fakes.k8s_checks import restricted_violations
from trainer.contract import EXIT_PREEMPTED

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"
CONTROLLER_UID_LABEL = "batch.kubernetes.io/controller-uid"
INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
PSA_ENFORCE = "pod-security.kubernetes.io/enforce"
NODE = "gke-fake-gpu-pool-1a2b"
VERSION = {"major": "1", "minor": "33", "gitVersion": "v1.33.2-fake", "platform": "linux/amd64"}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


KINDS = [
    Kind("", "v1", "namespaces", "Namespace", namespaced=False, short=("ns",)),
    Kind("", "v1", "pods", "Pod", short=("po",), subresources=("log", "status")),
    Kind("", "v1", "services", "Service", short=("svc",)),
    Kind("", "v1", "serviceaccounts", "ServiceAccount", short=("sa",)),
    Kind("", "v1", "secrets", "Secret"),
    Kind("", "v1", "configmaps", "ConfigMap", short=("cm",)),
    Kind("", "v1", "events", "Event", short=("ev",)),
    Kind("batch", "v1", "jobs", "Job", subresources=("status",)),
    Kind("batch", "v1", "cronjobs", "CronJob", short=("cj",), subresources=("status",)),
    Kind("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    Kind("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
]
BY_PLURAL = {k.plural: k for k in KINDS}


@dataclass
class Script:
    """What the fake kubelet does with the pods of a new Job.

    start: "ok" (ContainerCreating, then Running), "ImagePullBackOff" (waits forever, like a
    missing image) or "Unschedulable" (Pending forever with a FailedScheduling event).
    outcome: "succeed" (exit 0), "fail" (exit `exit_code`) or "hang" (runs until deleted).
    For Indexed Jobs only worker `fail_index` fails; the others run until the Job ends, or,
    with `group`, exit 75 right after it, as the trainer's workers do when their synchronous
    group breaks (tested with real processes in test_multiworker.py).
    fail_times: the failing pod fails on its first `fail_times` launches in the Job, and every
    pod launched after that succeeds (a retry that resumes and completes); None: always fails.
    reason/message: when set, the Job fails with this condition instead of the one the Job
    controller would derive (e.g. DeadlineExceeded, which the fake does not time itself).
    """

    outcome: str = "succeed"
    delay: float = 0.3
    exit_code: int = 1
    reason: str | None = None
    message: str = ""
    start: str = "ok"
    start_delay: float = 0.1
    fail_index: int = 0
    fail_times: int | None = None
    group: bool = False
    log: list[str] = field(default_factory=lambda: ["epoch 1/1", "test_accuracy=0.87", "done"])


class StatusError(Exception):
    """A Kubernetes `Status` failure with its HTTP code."""

    def __init__(self, code: int, reason: str, message: str, name: str = "", kind: str = ""):
        super().__init__(message)
        self.body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": {"name": name, "kind": kind},
            "code": code,
        }
        self.code = code


_StatusError = StatusError  # the name older tests import


def _not_found(kind: Kind, name: str) -> StatusError:
    what = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
    return StatusError(404, "NotFound", f'{what} "{name}" not found', name, kind.plural)


class FakeKube:
    """State and behaviour; the HTTP handler below only parses and serialises."""

    def __init__(self, namespaces: tuple[str, ...] = ("default", "ml")) -> None:
        self.forbidden: set[tuple[str, str]] = set()  # (verb, resource)
        self.scripts: dict[str, Script | list[Script]] = {}
        self.default_script = Script()
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (plural, ns, name)
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, type, plural, obj)
        self.requests: list[tuple[str, str, dict[str, list[str]], Any]] = []
        self.logs: dict[str, list[str]] = {}  # pod name -> lines written so far
        self.rv = 100
        self.compacted = 0  # watches from an older resourceVersion get 410 Gone
        self.watch_epoch = 0  # bumped by expire_watches(): open watches end with 410
        self.cond = threading.Condition()
        self.server: ThreadingHTTPServer | None = None
        self.url = ""
        self.stopped = False
        self._job_scripts: dict[str, Script] = {}  # Job uid -> its Script
        self._job_failures: dict[str, int] = {}  # Job uid -> scripted failures so far
        for ns in namespaces:
            self.add_namespace(ns)

    # -- seeding --------------------------------------------------------------------------------

    def add_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        """A namespace with its `default` ServiceAccount, as the real controllers make it."""
        with self.cond:
            self._create(BY_PLURAL["namespaces"], "", {"metadata": {"name": name, "labels": {
                "kubernetes.io/metadata.name": name, **(labels or {})}}})  # fmt: skip
            self._create(BY_PLURAL["serviceaccounts"], name, {"metadata": {"name": "default"}})

    def add(self, plural: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create an object as a client would (e.g. the trainer ServiceAccount)."""
        with self.cond:
            return copy.deepcopy(self._create(BY_PLURAL[plural], namespace, copy.deepcopy(obj)))

    @property
    def namespaces(self) -> set[str]:
        return {k[2] for k in self.objects if k[0] == "namespaces"}

    # -- store (hold self.cond) -----------------------------------------------------------------

    def _put(self, plural: str, obj: dict[str, Any], event: str) -> dict[str, Any]:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        key = (plural, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        if event == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        self.events.append((self.rv, event, plural, copy.deepcopy(obj)))
        self.cond.notify_all()
        return obj

    def _get(self, kind: Kind, ns: str, name: str) -> dict[str, Any]:
        obj = self.objects.get((kind.plural, ns if kind.namespaced else "", name))
        if obj is None:
            raise _not_found(kind, name)
        return obj

    def _check_namespace(self, kind: Kind, ns: str) -> None:
        if kind.namespaced and ("namespaces", "", ns) not in self.objects:
            raise StatusError(404, "NotFound", f'namespaces "{ns}" not found', ns, "namespaces")

    def _create(self, kind: Kind, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
            raise StatusError(400, "BadRequest", "the body of the request was in an unknown format")
        meta = body["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name") or ""
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name) or len(name) > 253:
            raise StatusError(
                422, "Invalid", f'{kind.kind} "{name}" is invalid: metadata.name: Invalid value: '
                f'"{name}": a lowercase RFC 1123 subdomain must consist of lower case '
                "alphanumeric characters, '-' or '.'", name, kind.plural)  # fmt: skip
        self._check_namespace(kind, ns)
        key = (kind.plural, ns if kind.namespaced else "", name)
        if key in self.objects:
            what = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
            raise StatusError(409, "AlreadyExists", f'{what} "{name}" already exists', name,
                              kind.plural)  # fmt: skip
        body["apiVersion"], body["kind"] = kind.api_version, kind.kind
        if kind.namespaced:
            meta["namespace"] = ns
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        if kind.plural == "pods":
            self._admit_pod(ns, body)
        if kind.plural == "jobs":
            self._default_job(body)
        if kind.plural == "secrets" and "stringData" in body:
            data = body.setdefault("data", {})
            for k, v in body.pop("stringData").items():
                data[k] = base64.b64encode(str(v).encode()).decode()
        obj = self._put(kind.plural, body, "ADDED")
        if kind.plural == "jobs":
            self._job_created(obj)
        if kind.plural == "pods" and not meta.get("ownerReferences"):
            # A bare pod (e.g. a `helm test` hook) runs as the Script under its own name says.
            script = self.scripts.get(name, self.default_script)
            self._pod_pending(obj, script[0] if isinstance(script, list) else script, None)
        return obj

    def _update(self, kind: Kind, ns: str, name: str, new: dict[str, Any]) -> dict[str, Any]:
        old = self._get(kind, ns, name)
        new["apiVersion"], new["kind"] = kind.api_version, kind.kind
        meta = new.setdefault("metadata", {})
        rv = meta.get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise StatusError(
                409,
                "Conflict",
                f"Operation cannot be fulfilled on {kind.plural} "
                f'"{name}": the object has been modified; please apply your '
                "changes to the latest version and try again",
                name,
                kind.plural,
            )
        for k in ("uid", "creationTimestamp", "namespace", "name", "deletionTimestamp"):
            if k in old["metadata"]:
                meta[k] = old["metadata"][k]
        if "status" in old and kind.plural in ("jobs", "pods", "cronjobs"):
            new["status"] = old["status"]  # status is a subresource: writes to it are ignored
        if kind.plural == "jobs":
            self._check_job_update(old, new)
        if kind.plural == "pods" and old["spec"] != new.get("spec"):
            raise StatusError(
                422,
                "Invalid",
                f'Pod "{name}" is invalid: spec: Forbidden: '
                "pod updates may not change fields other than "
                "`spec.containers[*].image`, ...",
                name,
                "pods",
            )
        if new.get("spec") != old.get("spec"):
            meta["generation"] = old["metadata"].get("generation", 1) + 1
        if _same(old, new):
            return old  # a no-op write changes nothing, not even the resourceVersion
        obj = self._put(kind.plural, new, "MODIFIED")
        if kind.plural == "jobs":
            self._job_updated(old, obj)
        return obj

    # -- admission ------------------------------------------------------------------------------

    def _admit_pod(self, ns: str, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        labels = self.objects[("namespaces", "", ns)]["metadata"].get("labels", {})
        if labels.get(PSA_ENFORCE) == "restricted":
            bad = [v for v in restricted_violations(pod) if "root filesystem" not in v]
            if bad:
                raise StatusError(403, "Forbidden", f'pods "{name}" is forbidden: violates '
                                  f'PodSecurity "restricted:latest": {", ".join(bad)}', name,
                                  "pods")  # fmt: skip
        sa = pod.get("spec", {}).get("serviceAccountName") or "default"
        if ("serviceaccounts", ns, sa) not in self.objects:
            raise StatusError(403, "Forbidden", f'pods "{name}" is forbidden: error looking up '
                              f'service account {ns}/{sa}: serviceaccount "{sa}" not found',
                              name, "pods")  # fmt: skip

    # -- the Job controller -----------------------------------------------------------------------

    def _default_job(self, job: dict[str, Any]) -> None:
        spec = job.setdefault("spec", {})
        uid = job["metadata"]["uid"]
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", spec["parallelism"])
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec.setdefault("manualSelector", False)
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
        spec.setdefault("selector", {"matchLabels": {CONTROLLER_UID_LABEL: uid}})
        labels = spec.setdefault("template", {}).setdefault("metadata", {}).setdefault("labels", {})
        name = job["metadata"]["name"]
        labels.update({CONTROLLER_UID_LABEL: uid, JOB_NAME_LABEL: name, "controller-uid": uid,
                       "job-name": name})  # fmt: skip
        job["metadata"].setdefault("labels", {}).update(
            {k: v for k, v in labels.items() if k in (CONTROLLER_UID_LABEL, JOB_NAME_LABEL)}
        )
        job["status"] = {}

    def _check_job_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        name = old["metadata"]["name"]
        o, n = old["spec"], new.get("spec") or {}
        never_started = o.get("suspend") and "startTime" not in old.get("status", {})
        for path in ("selector", "template", "completionMode", "podFailurePolicy",
                     "backoffLimitPerIndex", "manualSelector"):  # fmt: skip
            before, after = o.get(path), n.get(path)
            if path == "template" and never_started:
                # A suspended Job that never ran may change its scheduling directives only.
                strip = ("nodeSelector", "tolerations", "affinity", "schedulingGates")
                before = {**before, "spec": {k: v for k, v in before["spec"].items()
                                             if k not in strip}}  # fmt: skip
                after = after and {**after, "spec": {k: v for k, v in after["spec"].items()
                                                     if k not in strip}}  # fmt: skip
                before["metadata"] = after.get("metadata") if after else None
            if after is not None and before != after:
                raise StatusError(422, "Invalid", f'Job.batch "{name}" is invalid: spec.{path}: '
                                  f"Invalid value: {json.dumps(after)[:200]}: field is immutable",
                                  name, "jobs")  # fmt: skip
        if n.get("completions") != o.get("completions") and n.get("completions") is not None:
            raise StatusError(422, "Invalid", f'Job.batch "{name}" is invalid: spec.completions: '
                              f"Invalid value: {n['completions']}: field is immutable", name,
                              "jobs")  # fmt: skip

    def _job_script(self, job: dict[str, Any]) -> Script:
        uid = job["metadata"]["uid"]
        if uid not in self._job_scripts:
            script = self.scripts.get(job["metadata"]["name"], self.default_script)
            if isinstance(script, list):  # one Script per creation of the same Job name
                script = script.pop(0) if len(script) > 1 else script[0]
            self._job_scripts[uid] = script
        return self._job_scripts[uid]

    def _set_job_status(self, job: dict[str, Any], **changes: Any) -> dict[str, Any]:
        job = copy.deepcopy(job)
        job.setdefault("status", {}).update(changes)
        return self._put("jobs", job, "MODIFIED")

    def _job_cond(self, ctype: str, reason: str = "", message: str = "") -> dict[str, Any]:
        cond = {"type": ctype, "status": "True", "lastProbeTime": _now(),
                "lastTransitionTime": _now()}  # fmt: skip
        if reason:
            cond.update(reason=reason, message=message)
        return cond

    def _job_created(self, job: dict[str, Any]) -> None:
        if job["spec"].get("suspend"):
            self._set_job_status(job, conditions=[self._job_cond(
                "Suspended", "JobSuspended", "Job suspended")], active=0)  # fmt: skip
            self._event(job, "Normal", "Suspended", "Job suspended", "job-controller")
            return
        self._job_start(job)

    def _job_updated(self, old: dict[str, Any], job: dict[str, Any]) -> None:
        if old["spec"].get("suspend") and not job["spec"].get("suspend"):
            conds = [c for c in job["status"].get("conditions", []) if c["type"] != "Suspended"]
            conds.append({**self._job_cond("Suspended", "JobResumed", "Job resumed"),
                          "status": "False"})  # fmt: skip
            job = self._set_job_status(job, conditions=conds)
            self._event(job, "Normal", "Resumed", "Job resumed", "job-controller")
            self._job_start(job)

    def _job_start(self, job: dict[str, Any]) -> None:
        job = self._set_job_status(job, startTime=_now(), active=0, ready=0)
        if job["spec"]["completionMode"] == "Indexed":
            for index in range(job["spec"]["completions"]):
                self._create_job_pod(job, index)
        else:
            for _ in range(min(job["spec"]["parallelism"], job["spec"]["completions"])):
                self._create_job_pod(job, None)

    def _create_job_pod(self, job: dict[str, Any], index: int | None) -> None:
        name, ns = job["metadata"]["name"], job["metadata"]["namespace"]
        template = copy.deepcopy(job["spec"]["template"])
        meta = template.setdefault("metadata", {})
        pod_name = f"{name}-{index}-{uuid.uuid4().hex[:5]}" if index is not None else (
            f"{name}-{uuid.uuid4().hex[:5]}")  # fmt: skip
        meta.update(name=pod_name, ownerReferences=[{
            "apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": job["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}])  # fmt: skip
        spec = template["spec"]
        if index is not None:
            meta.setdefault("annotations", {})[INDEX_ANNOTATION] = str(index)
            meta["labels"][INDEX_ANNOTATION] = str(index)
            spec["hostname"] = f"{name}-{index}"
            for c in spec.get("containers", []):
                c.setdefault("env", []).append(
                    {
                        "name": "JOB_COMPLETION_INDEX",
                        "valueFrom": {
                            "fieldRef": {"fieldPath": f"metadata.annotations['{INDEX_ANNOTATION}']"}
                        },
                    }
                )
        try:
            pod = self._create(BY_PLURAL["pods"], ns, {"apiVersion": "v1", "kind": "Pod",
                                                       **template})  # fmt: skip
        except StatusError as e:
            self._event(job, "Warning", "FailedCreate", f"Error creating: {e}", "job-controller")
            return
        self._event(job, "Normal", "SuccessfulCreate", f"Created pod: {pod_name}", "job-controller")
        job = self.objects[("jobs", ns, name)]
        self._set_job_status(job, active=job["status"].get("active", 0) + 1)
        self._pod_pending(pod, self._job_script(job), index)

    # -- the fake kubelet -------------------------------------------------------------------------

    def _later(self, delay: float, fn: Any, *args: Any) -> None:
        def run() -> None:
            with self.cond:
                if not self.stopped:
                    fn(*args)

        timer = threading.Timer(delay, run)
        timer.daemon = True
        timer.start()

    def _live_pod(self, pod: dict[str, Any]) -> dict[str, Any] | None:
        """The stored pod if it still exists and is not being deleted."""
        cur = self.objects.get(("pods", pod["metadata"]["namespace"], pod["metadata"]["name"]))
        if cur is None or cur["metadata"].get("uid") != pod["metadata"]["uid"]:
            return None
        return None if cur["metadata"].get("deletionTimestamp") else cur

    def _set_pod_status(self, pod: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        pod = copy.deepcopy(pod)
        pod["status"] = status
        return self._put("pods", pod, "MODIFIED")

    def _container_status(self, pod: dict[str, Any], state: dict[str, Any]) -> list[dict]:
        c = pod["spec"]["containers"][0]
        return [{"name": c["name"], "image": c.get("image", ""), "imageID": "",
                 "ready": "running" in state, "restartCount": 0, "started": "running" in state,
                 "state": state}]  # fmt: skip

    def _pod_pending(self, pod: dict[str, Any], script: Script, index: int | None) -> None:
        if script.start == "Unschedulable":
            message = (
                "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: "
                "0/3 nodes are available: 3 No preemption victims found for incoming pod."
            )
            self._set_pod_status(pod, {"phase": "Pending", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": message, "lastTransitionTime": _now()}]})  # fmt: skip
            self._event(pod, "Warning", "FailedScheduling", message, "default-scheduler")
            return
        pod = copy.deepcopy(pod)
        pod["spec"]["nodeName"] = NODE
        pod = self._put("pods", pod, "MODIFIED")
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        self._event(pod, "Normal", "Scheduled", f"Successfully assigned {ns}/{name} to {NODE}",
                    "default-scheduler")  # fmt: skip
        self._set_pod_status(pod, {
            "phase": "Pending", "hostIP": "10.0.0.2", "startTime": _now(),
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": self._container_status(
                pod, {"waiting": {"reason": "ContainerCreating"}})})  # fmt: skip
        self._later(script.start_delay, self._pod_start, pod, script, index)

    def _pod_start(self, pod: dict[str, Any], script: Script, index: int | None) -> None:
        pod = self._live_pod(pod)
        if pod is None:
            return
        image = pod["spec"]["containers"][0].get("image", "")
        self._event(pod, "Normal", "Pulling", f'Pulling image "{image}"', "kubelet")
        if script.start == "ImagePullBackOff":
            message = (
                f'Failed to pull image "{image}": rpc error: code = NotFound desc = failed '
                f'to pull and unpack image "docker.io/library/{image}": not found'
            )
            self._event(pod, "Warning", "Failed", message, "kubelet")
            self._event(pod, "Warning", "Failed", "Error: ErrImagePull", "kubelet")
            self._event(pod, "Normal", "BackOff", f'Back-off pulling image "{image}"', "kubelet")
            self._event(pod, "Warning", "Failed", "Error: ImagePullBackOff", "kubelet")
            status = copy.deepcopy(pod["status"])
            status["containerStatuses"] = self._container_status(
                pod,
                {
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": f'Back-off pulling image "{image}"',
                    }
                },
            )
            self._set_pod_status(pod, status)
            return
        self._event(pod, "Normal", "Pulled", f'Container image "{image}" already present',
                    "kubelet")  # fmt: skip
        self._event(pod, "Normal", "Created", "Created container trainer", "kubelet")
        self._event(pod, "Normal", "Started", "Started container trainer", "kubelet")
        status = copy.deepcopy(pod["status"])
        status.update(phase="Running", podIP="10.8.0.7", containerStatuses=self._container_status(
            pod, {"running": {"startedAt": _now()}}))  # fmt: skip
        status["conditions"].append({"type": "Ready", "status": "True"})
        pod = self._set_pod_status(pod, status)
        self.logs[pod["metadata"]["name"]] = []
        job = self._owner_job(pod)
        if job is not None:
            self._set_job_status(job, ready=job["status"].get("ready", 0) + 1)
        lines = list(script.log)
        for i, line in enumerate(lines):
            self._later(script.delay * i / max(1, len(lines)), self._log_line, pod, line)
        if script.outcome == "hang":
            return
        failures = self._job_failures.get(job["metadata"]["uid"], 0) if job else 0
        recovered = script.fail_times is not None and failures >= script.fail_times
        failing = script.outcome == "fail" and not recovered and (
            index is None or index == script.fail_index)  # fmt: skip
        if script.outcome == "fail" and not failing and not recovered:
            return  # a healthy peer of the failing worker: runs until the Job ends
        self._later(script.delay, self._pod_exit, pod, script.exit_code if failing else 0, script)

    def _log_line(self, pod: dict[str, Any], line: str) -> None:
        self.logs.setdefault(pod["metadata"]["name"], []).append(line)
        self.cond.notify_all()

    def _pod_exit(self, pod: dict[str, Any], code: int, script: Script | None) -> None:
        cur = self.objects.get(("pods", pod["metadata"]["namespace"], pod["metadata"]["name"]))
        if cur is None or cur["status"].get("phase") in ("Succeeded", "Failed"):
            return
        running = (cur["status"].get("containerStatuses") or [{}])[0].get("state", {})
        started = running.get("running", {}).get("startedAt", _now())
        status = copy.deepcopy(cur["status"])
        status["phase"] = "Succeeded" if code == 0 else "Failed"
        status["containerStatuses"] = self._container_status(cur, {"terminated": {
            "exitCode": code, "reason": "Completed" if code == 0 else "Error",
            "startedAt": started, "finishedAt": _now()}})  # fmt: skip
        status["conditions"] = [c for c in status.get("conditions", []) if c["type"] != "Ready"]
        if cur["metadata"].get("deletionTimestamp"):
            status["conditions"].append({"type": "DisruptionTarget", "status": "True",
                                         "reason": "TerminationByKubelet"})  # fmt: skip
        cur = self._set_pod_status(cur, status)
        self.cond.notify_all()
        job = self._owner_job(cur)
        if job is not None and not _job_finished(job):
            index = cur["metadata"].get("annotations", {}).get(INDEX_ANNOTATION)
            if script is not None and code != 0 and index == str(script.fail_index):
                uid = job["metadata"]["uid"]
                self._job_failures[uid] = self._job_failures.get(uid, 0) + 1
                if script.group:  # the synchronous group broke: its peers stop, resumable
                    for peer in self._dependents(job, "pods"):
                        if peer["status"].get("phase") == "Running":
                            self._later(0.05, self._pod_exit, peer, EXIT_PREEMPTED, None)
            self._job_pod_finished(job, cur, code, script)

    def _owner_job(self, pod: dict[str, Any]) -> dict[str, Any] | None:
        for ref in pod["metadata"].get("ownerReferences", []):
            if ref.get("kind") == "Job":
                job = self.objects.get(("jobs", pod["metadata"]["namespace"], ref["name"]))
                if job is not None and job["metadata"]["uid"] == ref["uid"]:
                    return job
        return None

    def _job_pod_finished(
        self, job: dict[str, Any], pod: dict[str, Any], code: int, script: Script | None
    ) -> None:
        st = job["status"]
        active = max(0, st.get("active", 0) - 1)
        ready = max(0, st.get("ready", 0) - 1)
        index = pod["metadata"].get("annotations", {}).get(INDEX_ANNOTATION)
        if code == 0:
            succeeded = st.get("succeeded", 0) + 1
            changes: dict[str, Any] = {"active": active, "ready": ready, "succeeded": succeeded}
            if index is not None:
                done = sorted({*_indexes(st.get("completedIndexes", "")), int(index)})
                changes["completedIndexes"] = ",".join(map(str, done))
            job = self._set_job_status(job, **changes)
            if succeeded >= job["spec"]["completions"]:
                self._job_finish(job, "Complete", "", "", "Completed", "Job completed")
            return
        name = pod["metadata"]["name"]
        action = self._failure_action(job, pod, code)
        if action == "Ignore":
            job = self._set_job_status(job, active=active, ready=ready)
            self._create_job_pod(job, None if index is None else int(index))
            return
        failed = st.get("failed", 0) + 1
        job = self._set_job_status(job, active=active, ready=ready, failed=failed)
        if script is not None and script.reason:
            self._job_finish(job, "Failed", script.reason, script.message)
        elif action is not None:
            ns = job["metadata"]["namespace"]
            self._job_finish(job, "Failed", "PodFailurePolicy", f"Container trainer for pod "
                             f"{ns}/{name} failed with exit code {code} matching FailJob rule "
                             f"at index {action}")  # fmt: skip
        elif failed > job["spec"]["backoffLimit"]:
            self._job_finish(job, "Failed", "BackoffLimitExceeded",
                             "Job has reached the specified backoff limit")  # fmt: skip
        else:
            self._create_job_pod(job, None if index is None else int(index))

    def _failure_action(self, job: dict[str, Any], pod: dict[str, Any], code: int) -> Any:
        """ "Ignore", the index of the matching FailJob rule, or None (count the failure)."""
        policy = job["spec"].get("podFailurePolicy") or {}
        conds = {c["type"] for c in pod["status"].get("conditions", []) if c["status"] == "True"}
        for i, rule in enumerate(policy.get("rules", [])):
            on_exit = rule.get("onExitCodes")
            matched = False
            if on_exit:
                inside = code in on_exit.get("values", [])
                matched = inside if on_exit.get("operator") == "In" else not inside
            for pc in rule.get("onPodConditions") or []:
                matched = matched or pc["type"] in conds
            if matched:
                return "Ignore" if rule["action"] == "Ignore" else (
                    i if rule["action"] == "FailJob" else None)  # fmt: skip
        return None

    def _job_finish(
        self, job: dict[str, Any], ctype: str, reason: str, message: str,
        event_reason: str = "", event_message: str = "",
    ) -> None:  # fmt: skip
        target = "SuccessCriteriaMet" if ctype == "Complete" else "FailureTarget"
        conds = [c for c in job["status"].get("conditions", []) if c["type"] != "Suspended"]
        conds += [self._job_cond(target, reason, message), self._job_cond(ctype, reason, message)]
        if ctype == "Complete":
            conds[-1].pop("reason", None), conds[-2].pop("reason", None)
        extra = {"completionTime": _now()} if ctype == "Complete" else {}
        job = self._set_job_status(job, conditions=conds, ready=0, **extra)
        self._event(job, "Normal" if ctype == "Complete" else "Warning",
                    event_reason or reason, event_message or message, "job-controller")  # fmt: skip
        # The controller removes the pods still running when the Job reached its end.
        for pod in self._dependents(job, "pods"):
            if pod["status"].get("phase") not in ("Succeeded", "Failed"):
                self._delete_pod(pod, grace=0.05)
        job = self.objects[("jobs", job["metadata"]["namespace"], job["metadata"]["name"])]
        self._set_job_status(job, active=0)

    # -- events ---------------------------------------------------------------------------------

    def _event(self, obj: dict, etype: str, reason: str, message: str, component: str) -> None:
        meta = obj["metadata"]
        ns = meta.get("namespace", "default")
        self._put("events", {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": ns,
                         "uid": str(uuid.uuid4()), "creationTimestamp": _now()},
            "involvedObject": {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
                               "name": meta["name"], "namespace": ns, "uid": meta.get("uid")},
            "reason": reason, "message": message, "type": etype, "count": 1,
            "firstTimestamp": _now(), "lastTimestamp": _now(),
            "source": {"component": component, **({"host": NODE} if component == "kubelet"
                                                  else {})},
            "reportingComponent": component, "reportingInstance": "",
        }, "ADDED")  # fmt: skip

    # -- deletion and garbage collection --------------------------------------------------------

    def _dependents(self, owner: dict[str, Any], plural: str | None = None) -> list[dict]:
        uid = owner["metadata"]["uid"]
        return [
            copy.deepcopy(o) for k, o in list(self.objects.items())
            if (plural is None or k[0] == plural)
            and any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences", []))
        ]  # fmt: skip

    def _delete_pod(self, pod: dict[str, Any], grace: float = 0.2) -> dict[str, Any]:
        """Graceful: the pod gets a deletionTimestamp, its container stops, then it is gone."""
        if pod["metadata"].get("deletionTimestamp"):
            return pod
        pod = copy.deepcopy(pod)
        pod["metadata"]["deletionTimestamp"] = _now()
        pod["metadata"]["deletionGracePeriodSeconds"] = int(
            pod["spec"].get("terminationGracePeriodSeconds", 30))  # fmt: skip
        pod = self._put("pods", pod, "MODIFIED")
        if pod["status"].get("phase") == "Running":
            self._event(pod, "Normal", "Killing", "Stopping container trainer", "kubelet")
            self._later(grace / 2, self._pod_exit, pod, 143, None)
        self._later(grace, self._remove, "pods", pod)
        return pod

    def _remove(self, plural: str, obj: dict[str, Any]) -> None:
        key = (plural, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        cur = self.objects.get(key)
        if cur is not None and cur["metadata"]["uid"] == obj["metadata"]["uid"]:
            self._put(plural, copy.deepcopy(cur), "DELETED")
            self._gc_owner_gone(cur)

    def _gc_owner_gone(self, owner: dict[str, Any]) -> None:
        for dep in self._dependents(owner):
            plural = BY_PLURAL[_plural_of(dep["kind"])].plural
            self._delete(BY_PLURAL[plural], dep, "Background")
        # An owner waiting for its dependents (foreground) may now go.
        for key, obj in list(self.objects.items()):
            meta = obj["metadata"]
            if "foregroundDeletion" in meta.get("finalizers", []) and not self._dependents(obj):
                self._put(key[0], copy.deepcopy(obj), "DELETED")
                self._gc_owner_gone(obj)

    def _delete(self, kind: Kind, obj: dict[str, Any], policy: str | None) -> tuple[int, Any]:
        meta = obj["metadata"]
        if kind.plural == "pods":
            return 200, self._delete_pod(obj)
        if kind.plural == "namespaces":
            raise StatusError(405, "MethodNotAllowed", "the fake does not delete namespaces")
        # batch/v1 Jobs and CronJobs orphan their pods unless told otherwise.
        policy = policy or ("Orphan" if kind.plural in ("jobs", "cronjobs") else "Background")
        if policy == "Foreground" and self._dependents(obj):
            obj = copy.deepcopy(obj)
            obj["metadata"]["deletionTimestamp"] = _now()
            obj["metadata"].setdefault("finalizers", []).append("foregroundDeletion")
            obj = self._put(kind.plural, obj, "MODIFIED")
            self._later(0.05, self._gc_foreground, kind, obj)
            return 202, obj
        if policy == "Orphan":
            for dep in self._dependents(obj):
                dep["metadata"]["ownerReferences"] = [
                    r for r in dep["metadata"]["ownerReferences"] if r["uid"] != meta["uid"]
                ]
                self._put(_plural_of(dep["kind"]), dep, "MODIFIED")
        self._put(kind.plural, copy.deepcopy(obj), "DELETED")
        if policy == "Background":
            self._later(0.05, self._gc_owner_gone, obj)
        details = {"name": meta["name"], "group": kind.group, "kind": kind.plural,
                   "uid": meta["uid"]}  # fmt: skip
        return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                     "details": details}  # fmt: skip

    def _gc_foreground(self, kind: Kind, owner: dict[str, Any]) -> None:
        for dep in self._dependents(owner):
            self._delete(BY_PLURAL[_plural_of(dep["kind"])], dep, "Background")
        self._gc_owner_gone({"metadata": {"uid": "-"}})

    # -- patch ----------------------------------------------------------------------------------

    def _patch(self, kind: Kind, ns: str, name: str, ctype: str, raw: bytes,
               query: dict) -> tuple[int, dict]:  # fmt: skip
        key = (kind.plural, ns if kind.namespaced else "", name)
        if "apply-patch" in ctype:
            applied = yaml.safe_load(raw.decode() or "{}") or {}
            manager = query.get("fieldManager", [""])[0]
            if not manager:
                raise StatusError(400, "BadRequest", "PATCH /apply requires fieldManager")
            applied.setdefault("metadata", {})
            if key not in self.objects:
                applied["metadata"]["managedFields"] = [_managed(manager, "Apply", kind)]
                applied["metadata"]["name"] = name
                return 201, self._create(kind, ns, applied)
            old = self.objects[key]
            new = _merge(copy.deepcopy(old), applied, strategic=True)
            new["metadata"]["managedFields"] = [_managed(manager, "Apply", kind)]
            new["metadata"].pop("resourceVersion", None)
            return 200, self._update(kind, ns, name, new)
        old = self._get(kind, ns, name)
        patch = json.loads(raw or b"null")
        if "json-patch" in ctype:
            new = _json_patch(copy.deepcopy(old), patch)
        else:
            new = _merge(copy.deepcopy(old), patch, strategic="strategic" in ctype)
        if new.get("metadata", {}).get("resourceVersion") == old["metadata"]["resourceVersion"]:
            new["metadata"].pop("resourceVersion")
        return 200, self._update(kind, ns, name, new)

    # -- lifecycle ------------------------------------------------------------------------------

    def expire_watches(self) -> None:
        """Compact history: every open watch ends with 410 Gone, as after an etcd compaction."""
        with self.cond:
            self.compacted = self.rv
            self.watch_epoch += 1
            self.cond.notify_all()

    def start(self) -> FakeKube:
        fake = self

        class Handler(_Handler):
            kube = fake

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.rv += 1
            self.cond.notify_all()
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "tester", "user": {"token": "fake-token"}}],
                    "contexts": [
                        {
                            "name": "fake",
                            "context": {
                                "cluster": "fake",
                                "user": "tester",
                                "namespace": namespace,
                            },
                        }
                    ],
                    "current-context": "fake",
                }
            )
        )
        return path

    def requests_to(self, method: str, pattern: str) -> list[tuple[str, str, dict, Any]]:
        return [r for r in self.requests if r[0] == method and re.search(pattern, r[1])]

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> Any:
        """Block until predicate(self) is truthy (checked on every state change)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                value = predicate(self)
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("condition not reached in the fake API server")
                self.cond.wait(min(left, 0.1))

    def pods_of(self, job: str, namespace: str = "default") -> list[dict[str, Any]]:
        return [o for k, o in sorted(self.objects.items()) if k[0] == "pods" and k[1] == namespace
                and o["metadata"].get("labels", {}).get(JOB_NAME_LABEL) == job]  # fmt: skip


def _validate_strict(kind: Kind, body: dict[str, Any]) -> None:
    """fieldValidation=Strict: unknown or mistyped fields are a 400, as on a real server."""
    import kubernetes_validate

    obj = {"apiVersion": kind.api_version, "kind": kind.kind, **body}
    try:
        kubernetes_validate.validate(obj, VERSION["major"] + "." + VERSION["minor"], strict=True)
    except kubernetes_validate.ValidationError as e:
        name = (body.get("metadata") or {}).get("name", "")
        where = ".".join(str(p) for p in e.path)
        raise StatusError(400, "BadRequest", f"strict decoding error: {where}: {e.message}",
                          name, kind.plural) from e  # fmt: skip


def _same(old: dict[str, Any], new: dict[str, Any]) -> bool:
    volatile = ("resourceVersion", "managedFields", "generation")

    def strip(obj: dict[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in obj.get("metadata", {}).items() if k not in volatile}
        return {**obj, "metadata": meta}

    return strip(old) == strip(new)


def _job_finished(job: dict[str, Any]) -> bool:
    return any(c["type"] in ("Complete", "Failed") and c["status"] == "True"
               for c in job.get("status", {}).get("conditions", []))  # fmt: skip


def _indexes(text: str) -> list[int]:
    out: list[int] = []
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def _plural_of(kind: str) -> str:
    return next(k.plural for k in KINDS if k.kind == kind)


def _managed(manager: str, operation: str, kind: Kind) -> dict[str, Any]:
    return {"manager": manager, "operation": operation, "apiVersion": kind.api_version,
            "time": _now(), "fieldsType": "FieldsV1", "fieldsV1": {}}  # fmt: skip


def _merge(base: Any, patch: Any, *, strategic: bool) -> Any:
    """RFC 7386 merge patch; with `strategic`, lists of named objects merge by name."""
    if not isinstance(patch, dict) or not isinstance(base, dict):
        named = isinstance(patch, list) and isinstance(base, list) and bool(patch)
        if strategic and named and all(isinstance(i, dict) and "name" in i for i in patch + base):
            by_name = {i["name"]: i for i in base}
            return [_merge(by_name.get(i["name"], {}), i, strategic=True) for i in patch]
        return copy.deepcopy(patch)
    out = dict(base)
    for k, v in patch.items():
        if k == "$patch":
            continue
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(base.get(k), v, strategic=strategic)
    return out


def _json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent.setdefault(p, {})
        last = parts[-1]
        if op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                i = len(parent) if last == "-" else int(last)
                parent[i : i + (op["op"] == "replace")] = [op["value"]]
            else:
                parent[last] = op["value"]
        elif op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        elif op["op"] == "test" and (parent[int(last)] if isinstance(parent, list)
                                     else parent.get(last)) != op["value"]:  # fmt: skip
            raise StatusError(422, "Invalid", f"json patch test failed at {op['path']}")
    return doc


def _split_selector(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p.strip() for p in [*parts, cur] if p.strip()]


def _lookup(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _label_match(labels: dict[str, str], selector: str) -> bool:
    for req in _split_selector(selector):
        m = re.fullmatch(r"(\S+?)\s+(in|notin)\s+\((.*)\)", req)
        if m:
            values = {v.strip() for v in m.group(3).split(",")}
            if (labels.get(m.group(1)) in values) != (m.group(2) == "in"):
                return False
        elif "!=" in req:
            k, v = req.split("!=", 1)
            if labels.get(k.strip()) == v.strip():
                return False
        elif "=" in req:
            k, v = re.split(r"==?", req, maxsplit=1)
            if labels.get(k.strip()) != v.strip():
                return False
        elif req.startswith("!"):
            if req[1:] in labels:
                return False
        elif req not in labels:
            return False
    return True


def _field_match(obj: dict[str, Any], selector: str) -> bool:
    for req in _split_selector(selector):
        neg = "!=" in req
        k, v = re.split(r"!=|==?", req, maxsplit=1)
        have = _lookup(obj, k.strip())
        if (str(have if have is not None else "") == v.strip()) == neg:
            return False
    return True


_ROUTE = re.compile(
    r"^/(?:api/(?P<cv>v1)|apis/(?P<g>[^/]+)/(?P<v>[^/]+))"
    r"(?:/namespaces/(?P<ns>[^/]+))?/(?P<res>[a-z]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[a-z]+))?$"
)
_VERBS = {"POST": "create", "DELETE": "delete", "PUT": "update", "PATCH": "patch"}


def _parse(path: str) -> tuple[Kind, str, str | None, str | None]:
    # /api/v1/namespaces/NAME is the namespace itself, not a collection inside it.
    m = re.fullmatch(r"/api/v1/namespaces/([^/]+)", path)
    if m:
        return BY_PLURAL["namespaces"], "", m.group(1), None
    m = _ROUTE.match(path)
    if not m:
        raise StatusError(404, "NotFound", "the server could not find the requested resource")
    group, version = (m.group("g"), m.group("v")) if m.group("g") else ("", "v1")
    kind = BY_PLURAL.get(m.group("res"))
    if kind is None or (kind.group, kind.version) != (group, version):
        raise StatusError(404, "NotFound", "the server could not find the requested resource")
    sub = m.group("sub")
    if sub and sub not in kind.subresources:
        raise StatusError(404, "NotFound", "the server could not find the requested resource")
    return kind, m.group("ns") or "", m.group("name"), sub


class _Handler(BaseHTTPRequestHandler):
    kube: FakeKube
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_chunked(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _handle(self, method: str) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        ctype = self.headers.get("Content-Type", "")
        body: Any = None
        if raw and "yaml" not in ctype:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        elif raw:
            body = yaml.safe_load(raw)
        self.kube.requests.append((method, url.path, query, body))
        try:
            kind, ns, name, sub = _parse(url.path)
            watching = query.get("watch", ["false"])[0].lower() in ("true", "1")
            verb = _VERBS.get(method) or ("watch" if watching else "get" if name else "list")
            resource = f"{kind.plural}/{sub}" if sub else kind.plural
            if (verb, resource) in self.kube.forbidden:
                raise StatusError(403, "Forbidden",
                                  f'{kind.plural} is forbidden: User "tester" cannot {verb} '
                                  f'resource "{resource}" in API group "{kind.group}" in the '
                                  f'namespace "{ns}"', name or "", kind.plural)  # fmt: skip
            if ns and kind.namespaced and ("namespaces", "", ns) not in self.kube.objects:
                raise StatusError(404, "NotFound", f'namespaces "{ns}" not found', ns,
                                  "namespaces")  # fmt: skip
            self._dispatch(method, kind, ns, name, sub, query, body, raw, ctype, watching)
        except StatusError as e:
            self._send(e.code, e.body)

    def _dispatch(self, method, kind, ns, name, sub, query, body, raw, ctype, watching) -> None:
        kube = self.kube
        writes = method in ("POST", "PUT") or "apply-patch" in ctype
        if writes and query.get("fieldValidation", [""])[0] == "Strict" and isinstance(body, dict):
            _validate_strict(kind, body)
        if method == "POST":
            if name:
                raise StatusError(405, "MethodNotAllowed", "POST to a named object")
            with kube.cond:
                self._send(201, copy.deepcopy(kube._create(kind, ns, body)))
        elif method == "PUT":
            with kube.cond:
                self._send(200, copy.deepcopy(kube._update(kind, ns, name, body)))
        elif method == "PATCH":
            with kube.cond:
                code, obj = kube._patch(kind, ns, name, ctype, raw, query)
                self._send(code, copy.deepcopy(obj))
        elif method == "DELETE":
            policy = query.get("propagationPolicy", [None])[0] or (body or {}).get(
                "propagationPolicy"
            )
            with kube.cond:
                obj = copy.deepcopy(kube._get(kind, ns, name))
                code, out = kube._delete(kind, obj, policy)
                self._send(code, copy.deepcopy(out))
        elif sub == "log":
            self._log(ns, name, query)
        elif name:
            with kube.cond:
                obj = copy.deepcopy(kube._get(kind, ns, name))
            self._send(200, obj)
        elif watching:
            self._watch(kind, ns, query)
        else:
            with kube.cond:
                items = self._select(kind, ns, query)
                rv = str(kube.rv)
            self._send(200, {"kind": f"{kind.kind}List", "apiVersion": kind.api_version,
                             "metadata": {"resourceVersion": rv}, "items": items})  # fmt: skip

    def _select(self, kind: Kind, ns: str, query: dict) -> list[dict]:
        labels = query.get("labelSelector", [""])[0]
        fields = query.get("fieldSelector", [""])[0]
        return [
            copy.deepcopy(obj)
            for (res, ons, _), obj in sorted(self.kube.objects.items())
            if res == kind.plural and (not ns or ons == ns) and _matches(obj, labels, fields)
        ]

    def _log(self, ns: str, name: str, query: dict) -> None:
        kube = self.kube
        with kube.cond:
            pod = copy.deepcopy(kube._get(BY_PLURAL["pods"], ns, name))
        names = [c["name"] for c in pod["spec"].get("containers", [])]
        container = query.get("container", [""])[0] or (names[0] if len(names) == 1 else "")
        if container not in names:
            raise StatusError(400, "BadRequest", f"container {container} is not valid for pod "
                              f"{name}" if container else "a container name must be specified "
                              f"for pod {name}, choose one of: {names}")  # fmt: skip
        state = (pod["status"].get("containerStatuses") or [{}])[0].get("state") or {
            "waiting": {"reason": "ContainerCreating"}}  # fmt: skip
        if "waiting" in state:
            reason = state["waiting"].get("reason", "")
            why = "trying and failing to pull image" if "Image" in reason else reason
            raise StatusError(400, "BadRequest", f'container "{container}" in pod "{name}" is '
                              f"waiting to start: {why}")  # fmt: skip
        follow = query.get("follow", ["false"])[0].lower() == "true"
        tail = query.get("tailLines", [None])[0]
        with kube.cond:
            lines = list(kube.logs.get(name, []))
        sent = len(lines)
        if tail is not None:
            lines = lines[-int(tail) :] if int(tail) > 0 else []
        if not follow:
            self._send(200, "".join(f"{line}\n" for line in lines).encode(), "text/plain")
            return
        self._start_chunked("text/plain")
        try:
            if lines:
                self._chunk("".join(f"{line}\n" for line in lines).encode())
            while True:
                with kube.cond:
                    cur = kube.objects.get(("pods", ns, name))
                    more = list(kube.logs.get(name, []))[sent:]
                    ended = cur is None or cur["status"].get("phase") in ("Succeeded", "Failed")
                    if not more and not ended and not kube.stopped:
                        kube.cond.wait(0.5)
                        continue
                if more:
                    sent += len(more)
                    self._chunk("".join(f"{line}\n" for line in more).encode())
                if ended or kube.stopped:
                    break
            self._chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def _watch(self, kind: Kind, ns: str, query: dict) -> None:
        kube = self.kube
        rv_text = query.get("resourceVersion", [""])[0]
        timeout = float(query.get("timeoutSeconds", ["1800"])[0])
        labels = query.get("labelSelector", [""])[0]
        fields = query.get("fieldSelector", [""])[0]
        self._start_chunked("application/json")
        deadline = time.monotonic() + timeout

        def send(etype: str, obj: dict) -> None:
            self._chunk(json.dumps({"type": etype, "object": obj}).encode() + b"\n")

        def gone(since: int) -> None:
            send(
                "ERROR",
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "reason": "Expired",
                    "code": 410,
                    "message": f"too old resource version: {since} ({kube.compacted})",
                },
            )

        try:
            with kube.cond:
                epoch = kube.watch_epoch
                initial_events = query.get("sendInitialEvents", [""])[0] == "true"
                if rv_text in ("", "0") or initial_events:  # current state as ADDED, then changes
                    initial = self._select(kind, ns, query)
                    sent = kube.rv
                else:
                    initial, sent = [], int(rv_text)
            if sent < kube.compacted:
                gone(sent)
                self._chunk(b"")
                return
            for obj in initial:
                send("ADDED", obj)
            if query.get("sendInitialEvents", [""])[0] == "true":
                # Watch-list streaming (client-go reflectors): a bookmark ends the initial state.
                send("BOOKMARK", {"kind": kind.kind, "apiVersion": kind.api_version, "metadata": {
                    "resourceVersion": str(sent),
                    "annotations": {"k8s.io/initial-events-end": "true"}}})  # fmt: skip
            while time.monotonic() < deadline and not kube.stopped:
                with kube.cond:
                    if kube.watch_epoch != epoch:
                        pending = None
                    else:
                        pending = [e for e in kube.events if e[0] > sent]
                        if not pending:
                            kube.cond.wait(min(0.5, max(0.0, deadline - time.monotonic())))
                            continue
                if pending is None:
                    gone(sent)
                    break
                for rv, etype, plural, obj in pending:
                    sent = rv
                    meta = obj["metadata"]
                    if (plural == kind.plural and (not ns or meta.get("namespace") == ns)
                            and _matches(obj, labels, fields)):  # fmt: skip
                        send(etype, obj)
            self._chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")


def _matches(obj: dict, labels: str, fields: str) -> bool:
    have = obj["metadata"].get("labels") or {}
    return _label_match(have, labels) and _field_match(obj, fields)
