"""Check a live cluster before a submission: `python -m jobs.doctor` with jobs.submit's flags.

One line per check, then exit 0 when the run would start, else the code of the first blocker:
2 (as bad input: something must change before a run can start) or 75 (an outage: the API
server or the bucket did not answer; run it again).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Sequence
from typing import Any

from jobs import spec as specs
from jobs.doctor_addons import FAIL, OK, SKIP, WARN, AddonChecks, Check
from jobs.manifest import to_dict
from jobs.objects import build_objects
from jobs.values import ACCELERATOR_LABEL, GKE_GPU_COUNTS
from trainer import commandline, contract

GPU_RESOURCE = "nvidia.com/gpu"
WORKLOAD_IDENTITY_ANNOTATION = "iam.gke.io/gcp-service-account"
# Only GKE Autopilot serves this API group (its workload allowlists); there GPU nodes are made
# for the pod that asks, so no node needs to exist beforehand.
AUTOPILOT_GROUP = "auto.gke.io"
# The ConfigMap the cluster autoscaler keeps: node pools that can scale from zero exist.
AUTOSCALER_STATUS = ("kube-system", "cluster-autoscaler-status")


class Doctor:
    """The checks against one cluster for one JobSpec (the first of a submission's)."""

    def __init__(self, cluster: Any, job_specs: list[specs.JobSpec]):
        from kubernetes import client

        self.cluster = cluster
        self.specs = job_specs
        self.spec = job_specs[0]
        self.apis = client.ApisApi(cluster.api_client)
        self.addons = AddonChecks(cluster, self.spec)

    def checks(self) -> list[Callable[[], Check]]:
        return [
            self.api_server,
            self.dry_run,
            self.addons.jobset,
            self.addons.kueue,
            self.addons.queue,
            self.accelerator,
            self.service_account,
            self.image_pull,
            self.bucket,
        ]

    # --- the checks -------------------------------------------------------------------

    def api_server(self) -> Check:
        from kubernetes import client

        try:
            version = client.VersionApi(self.cluster.api_client).get_code().git_version
        except Exception as e:  # noqa: BLE001 - any failure here means no cluster to check
            return Check(
                "api server",
                FAIL,
                f"no answer ({commandline.one_line(e)[:200]}); "
                "check your kubeconfig context and network",
                contract.EXIT_PREEMPTED,
            )
        return Check("api server", OK, f"Kubernetes {version}")

    def dry_run(self) -> Check:
        """Exactly what jobs.submit would create, admitted by the server without storing it."""
        from jobs.apierrors import ClusterError

        objects = [obj for s in self.specs for obj in build_objects(s)]
        names = ", ".join(f"{to_dict(o)['kind'].lower()}/{to_dict(o)['metadata']['name']}"
                          for o in objects)  # fmt: skip
        try:
            self.cluster.create(objects, dry_run=True)
        except ClusterError as e:
            return Check("dry run", FAIL, commandline.one_line(e))
        return Check("dry run", OK, f"server-side, strict field validation: {names} accepted")

    def _autopilot(self) -> bool:
        groups = self.apis.get_api_versions().groups or []
        return any(g.name == AUTOPILOT_GROUP for g in groups)

    def accelerator(self) -> Check:
        s = self.spec
        if not s.gpus:
            return Check("accelerator", SKIP, "--gpus 0: a CPU Job")
        try:
            if self._autopilot():
                return self._autopilot_gpus()
            nodes = self.cluster.core.list_node(
                label_selector=f"{ACCELERATOR_LABEL}={s.accelerator}"
            ).items
        except Exception as e:  # noqa: BLE001 - listing nodes needs a cluster-scoped read
            why = commandline.one_line(e)[:120]
            return Check("accelerator", SKIP, f"cannot list nodes ({why})")
        fits = [n.metadata.name for n in nodes
                if int((n.status.allocatable or {}).get(GPU_RESOURCE, "0")) >= s.gpus]  # fmt: skip
        if fits:
            return Check("accelerator", OK, f"{len(fits)} node(s) with {s.gpus}x {s.accelerator}: "
                         f"{', '.join(fits[:3])}")  # fmt: skip
        what = (
            f"{len(nodes)} {s.accelerator} node(s), none with {s.gpus} allocatable GPUs"
            if nodes
            else f"no node has {ACCELERATOR_LABEL}={s.accelerator}"
        )
        if self._autoscaled():
            return Check("accelerator", WARN, f"{what}; the cluster autoscaler may add one "
                         "(a node pool at zero nodes cannot be seen from here)")  # fmt: skip
        return Check("accelerator", FAIL, f"{what}: the pods would stay Pending; add a "
                     f"{s.accelerator} node pool or pass another --accelerator")  # fmt: skip

    def _autopilot_gpus(self) -> Check:
        """Autopilot makes the node for the pod, but only for its machine types' GPU counts."""
        s = self.spec
        counts = GKE_GPU_COUNTS.get(s.accelerator)
        if counts and s.gpus not in counts:
            return Check("accelerator", FAIL, f"Autopilot takes {', '.join(map(str, counts))} "
                         f"GPUs of {s.accelerator} per pod, not {s.gpus}; pass one of those "
                         "to --gpus")  # fmt: skip
        return Check("accelerator", OK, f"Autopilot: it makes a {s.accelerator} node for the "
                     f"pod ({s.gpus} GPUs)")  # fmt: skip

    def _autoscaled(self) -> bool:
        try:
            self.cluster.core.read_namespaced_config_map(AUTOSCALER_STATUS[1], AUTOSCALER_STATUS[0])
        except Exception:  # noqa: BLE001 - absent or unreadable: no autoscaler we can see
            return False
        return True

    def service_account(self) -> Check:
        from kubernetes.client.exceptions import ApiException

        s = self.spec
        try:
            sa = self.cluster.core.read_namespaced_service_account(s.service_account, s.namespace)
        except ApiException as e:
            if e.status == 404:
                return Check("service account", FAIL, f"{s.service_account} does not exist in "
                             f"namespace {s.namespace}: the Job could make no pod; `helm install` "
                             "creates it, or pass --service-account")  # fmt: skip
            return Check("service account", SKIP, f"cannot read it (HTTP {e.status})")
        gsa = (sa.metadata.annotations or {}).get(WORKLOAD_IDENTITY_ANNOTATION)
        if gsa:
            return Check(
                "service account",
                OK,
                f"{s.service_account} acts as {gsa} (that "
                "account needs roles/iam.workloadIdentityUser for "
                f"[{s.namespace}/{s.service_account}], not readable from here)",
            )
        route = (
            ": by the direct Workload Identity route, principal://iam.googleapis.com/projects/"
            "NUMBER/locations/global/workloadIdentityPools/PROJECT.svc.id.goog/subject/ns/"
            f"{s.namespace}/sa/{s.service_account} needs roles/storage.objectUser on the bucket "
            "(not readable from here)"
        )
        return Check(
            "service account",
            OK,
            f"{s.service_account} exists without {WORKLOAD_IDENTITY_ANNOTATION}"
            f"{route if self._gcs else ''}",
        )

    @property
    def _gcs(self) -> bool:
        return self.spec.output.startswith("gs://")

    def image_pull(self) -> Check:
        image = self.spec.image
        if ".pkg.dev/" not in image.split("@")[0]:
            return Check("image pull", SKIP, f"{image} is not in Artifact Registry")
        return Check("image pull", SKIP, "the node service account's roles/artifactregistry."
                     "reader on the repository is not readable from the cluster (docs/"
                     "kubernetes.md grants it)")  # fmt: skip

    def bucket(self) -> Check:
        from trainer.storage import StoreError, StoreUnavailableError, open_store

        output = self.spec.output
        if not self._gcs:
            return Check("bucket", SKIP, f"{output} is a path in the pod's volume: not "
                         "reachable from here")  # fmt: skip
        try:
            open_store(output).check_writable()  # a probe written and deleted
        except StoreUnavailableError as e:
            return Check("bucket", FAIL, commandline.one_line(e), contract.EXIT_PREEMPTED)
        except StoreError as e:
            return Check("bucket", FAIL, commandline.one_line(e))
        return Check("bucket", OK, f"{output} writable with your credentials")


def doctor(
    model: str = "lstm",
    *,
    kubeconfig: str | None = None,
    context: str | None = None,
    **settings: Any,
) -> int:
    # The signature and help come from jobs.submit's (_signature below).
    from jobs.kube import Cluster, load_api_client
    from jobs.submit import resolve_specs

    job_specs = resolve_specs(model, kubeconfig, context, settings)
    cluster = Cluster(load_api_client(kubeconfig, context))
    report = Doctor(cluster, job_specs)
    results: list[Check] = []
    for check in report.checks():
        result = check()
        results.append(result)
        print(result.line(), flush=True)
        if result.name == "api server" and result.status == FAIL:
            break  # nothing else can be asked
    blockers = [r for r in results if r.status == FAIL]
    if not blockers:
        print(f"doctor: {job_specs[0].kind}/{job_specs[0].job_name} would run")
        return contract.EXIT_OK
    print(f"doctor: blocked by {', '.join(b.name for b in blockers)}", file=sys.stderr)
    return blockers[0].code


# jobs.submit's flags that only submitting has.
_SUBMIT_ONLY = ("dry_run", "wait", "follow", "retries", "timeout")


def _signature() -> tuple[inspect.Signature, str]:
    from jobs import submit

    params = [p for p in inspect.signature(submit.submit).parameters.values()
              if p.name not in _SUBMIT_ONLY]  # fmt: skip
    lines = (submit.submit.__doc__ or "").splitlines()
    kept = [line for line in lines[1:]
            if line.strip().split(":")[0] not in _SUBMIT_ONLY]  # fmt: skip
    intro = (
        "Check the cluster for the Job(s) jobs.submit would create with these flags: "
        "one line per check; exit 0 if it would run, 2 on a blocker, 75 on an outage."
    )
    return inspect.Signature(params), "\n".join([intro, *kept]) + "\n"


def _run(model: str = "lstm", **flags: Any) -> None:
    # fire prints what a command returns: the exit code is handed over beside it.
    _result["code"] = doctor(model, **flags)


_result: dict[str, int] = {}
_run.__signature__, _run.__doc__ = _signature()  # type: ignore[attr-defined]


def main(argv: Sequence[str] | None = None) -> int:
    from jobs import _cli

    _result.clear()
    code = _cli.entrypoint(_run, "jobs.doctor")(argv)
    return code or _result.get("code", contract.EXIT_OK)


if __name__ == "__main__":
    sys.exit(main())
