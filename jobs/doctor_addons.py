"""jobs.doctor's report line, and its checks of what a run may need installed: JobSet (its
release has every field we render), Kueue (it serves the version jobs.status reads) and the
--queue (it exists and covers every resource the pod asks for)."""

from __future__ import annotations

import dataclasses
from typing import Any

from jobs import spec as specs
from jobs.manifest import to_dict
from jobs.names import (
    CONTAINER_NAME,
    JOBSET_GROUP,
    JOBSET_MIN_RELEASE,
    JOBSET_NEWER_FIELDS,
    JOBSET_PLURAL,
    KUEUE_GROUP,
    KUEUE_VERSION,
)
from jobs.objects import build_objects
from trainer import commandline, contract

OK, WARN, SKIP, FAIL = "ok", "warn", "skip", "FAIL"
# The queues are read at jobs.status's version, else at the one an older Kueue serves.
KUEUE_VERSIONS = (KUEUE_VERSION, "v1beta1")
# Where the upstream release manifests put the controllers (their image tag is the release).
CONTROLLERS = {
    "JobSet": ("jobset-system", "jobset-controller-manager"),
    "Kueue": ("kueue-system", "kueue-controller-manager"),
}


@dataclasses.dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, how it stands, and the exit code of a FAIL."""

    name: str
    status: str
    text: str
    code: int = contract.EXIT_BAD_INPUT

    def line(self) -> str:
        return f"{self.status:<4} {self.name}: {self.text}"


class AddonChecks:
    """The JobSet, Kueue and queue checks against one cluster for one JobSpec."""

    def __init__(self, cluster: Any, spec: specs.JobSpec):
        from kubernetes import client

        self.cluster = cluster
        self.spec = spec
        self.ext = client.ApiextensionsV1Api(cluster.api_client)
        self.apps = client.AppsV1Api(cluster.api_client)

    def _crd(self, name: str) -> Any | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.ext.read_custom_resource_definition(name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def _release(self, addon: str) -> str:
        """The controller's release from its Deployment's image tag, or '' where unreadable."""
        namespace, name = CONTROLLERS[addon]
        try:
            deployment = self.apps.read_namespaced_deployment(name, namespace)
        except Exception:  # noqa: BLE001 - not installed that way, or not ours to read
            return ""
        for container in deployment.spec.template.spec.containers:
            tag = container.image.rpartition(":")[2] if ":" in container.image else ""
            if tag.startswith("v"):
                return tag
        return ""

    def jobset(self) -> Check:
        needed = self.spec.runtime == specs.RUNTIME_JOBSET
        try:
            crd = self._crd(f"{JOBSET_PLURAL}.{JOBSET_GROUP}")
        except Exception as e:  # noqa: BLE001 - CRDs are cluster-scoped: maybe not readable
            return Check("jobset", SKIP, f"cannot read its CRD ({commandline.one_line(e)[:120]})")
        if crd is None:
            status = FAIL if needed else SKIP
            return Check("jobset", status, "not installed (--runtime jobset needs it; "
                         "docs/kubernetes.md installs it)")  # fmt: skip
        schema = str(to_dict(crd).get("spec", {}).get("versions", []))
        missing = [f for f in JOBSET_NEWER_FIELDS if f not in schema]
        release = self._release("JobSet")
        found = f"{release} installed" if release else "installed (release not readable)"
        if missing:
            status = FAIL if needed else WARN
            return Check("jobset", status, f"{found}, older than {JOBSET_MIN_RELEASE}: its API "
                         f"lacks {missing[0]}; upgrade JobSet or use --runtime job")  # fmt: skip
        return Check("jobset", OK, f"{found}; its API has every field we render "
                     f"({JOBSET_MIN_RELEASE} or later)")  # fmt: skip

    def kueue(self) -> Check:
        needed = bool(self.spec.queue)
        try:
            crd = self._crd(f"clusterqueues.{KUEUE_GROUP}")
        except Exception as e:  # noqa: BLE001
            return Check("kueue", SKIP, f"cannot read its CRD ({commandline.one_line(e)[:120]})")
        if crd is None:
            return Check(
                "kueue",
                FAIL if needed else SKIP,
                "not installed (--queue needs it; docs/kubernetes.md installs it)",
            )
        served = [v.name for v in crd.spec.versions if v.served]
        release = self._release("Kueue")
        found = f"{release} installed" if release else "installed (release not readable)"
        if KUEUE_VERSIONS[0] not in served:
            return Check(
                "kueue",
                FAIL if needed else WARN,
                f"{found}, serving {', '.join(served)}"
                f" only: jobs.status reads {KUEUE_VERSIONS[0]} (Kueue v0.15 or later)",
            )
        return Check("kueue", OK, f"{found}, serving {', '.join(served)}")

    def _kueue_get(self, plural: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        from kubernetes.client.exceptions import ApiException

        custom = self.cluster.custom
        last: ApiException | None = None
        for version in KUEUE_VERSIONS:
            try:
                if namespace:
                    return custom.get_namespaced_custom_object(KUEUE_GROUP, version, namespace,
                                                               plural, name)  # fmt: skip
                return custom.get_cluster_custom_object(KUEUE_GROUP, version, plural, name)
            except ApiException as e:
                if e.status != 404:
                    raise
                last = e
        assert last is not None
        raise last

    def requested_resources(self) -> list[str]:
        """Every resource a pod of the Job asks for (a limit without a request is one too)."""
        pod = to_dict(build_objects(self.spec)[-1])
        template = pod["spec"].get("template") or pod["spec"]["replicatedJobs"][0]["template"]
        while "template" in template.get("spec", {}):
            template = template["spec"]["template"]
        found: list[str] = []
        for c in template["spec"]["containers"] + template["spec"].get("initContainers", []):
            res = c.get("resources") or {}
            for name in [*res.get("requests", {}), *res.get("limits", {})]:
                if name not in found:
                    found.append(name)
        return found

    def queue(self) -> Check:
        from kubernetes.client.exceptions import ApiException

        s = self.spec
        if not s.queue:
            return Check("queue", SKIP, "no --queue: Kueue does not admit this Job")
        try:
            local = self._kueue_get("localqueues", s.queue, s.namespace)
            name = local["spec"]["clusterQueue"]
            cq = self._kueue_get("clusterqueues", name)
        except ApiException as e:
            what = "LocalQueue " + s.queue if e.status == 404 else "the queues"
            return Check("queue", FAIL, f"cannot read {what} in namespace {s.namespace} "
                         f"(HTTP {e.status}); create it (docs/kueue.yaml)")  # fmt: skip
        covered = {r for g in cq["spec"].get("resourceGroups", [])
                   for r in g.get("coveredResources", [])}  # fmt: skip
        missing = [r for r in self.requested_resources() if r not in covered]
        if missing:
            return Check("queue", FAIL, f"ClusterQueue {name} (LocalQueue {s.queue}) does not "
                         f"cover {', '.join(missing)}, which the {CONTAINER_NAME} requests: Kueue "
                         "never admits the Job; add it to the ClusterQueue's coveredResources "
                         "and flavors (docs/kueue.yaml)")  # fmt: skip
        return Check("queue", OK, f"ClusterQueue {name} covers "
                     f"{', '.join(self.requested_resources())}")  # fmt: skip
