"""A small fake Kubernetes API server on 127.0.0.1: batch/v1 jobs, core/v1 pods, services.

Enough of the real protocol for the official `kubernetes` client: JSON objects, Status
errors (403/404/409), `?watch=true` as a chunked stream of events, pod logs, and a fake
Job controller that makes one pod per Job and finishes it as a test scripts.
"""

from __future__ import annotations

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

JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Script:
    """What the fake controller does with a new Job."""

    outcome: str = "succeed"  # succeed | fail | hang
    delay: float = 0.3
    reason: str = "BackoffLimitExceeded"
    message: str = "Job has reached the specified backoff limit"
    log: list[str] = field(default_factory=lambda: ["epoch 1/1", "test_accuracy=0.87", "done"])


class FakeKube:
    """State and behaviour; the HTTP handler below only parses and serialises."""

    def __init__(self) -> None:
        self.namespaces = {"default", "ml"}
        self.forbidden: set[tuple[str, str]] = set()  # (verb, resource)
        self.scripts: dict[str, Script | list[Script]] = {}
        self.default_script = Script()
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (resource, ns, name)
        self.events: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, type, resource, obj)
        self.requests: list[tuple[str, str, dict[str, list[str]], Any]] = []
        self.logs: dict[str, list[str]] = {}
        self.rv = 100
        self.cond = threading.Condition()
        self.server: ThreadingHTTPServer | None = None
        self.url = ""

    # -- state changes (hold self.cond) -------------------------------------------------------

    def _put(self, resource: str, obj: dict[str, Any], event: str) -> dict[str, Any]:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        key = (resource, obj["metadata"]["namespace"], obj["metadata"]["name"])
        if event == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        self.events.append((self.rv, event, resource, copy.deepcopy(obj)))
        self.cond.notify_all()
        return obj

    def create(self, resource: str, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        meta = body.setdefault("metadata", {})
        meta.update(namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=_now())
        with self.cond:
            if (resource, ns, meta["name"]) in self.objects:
                raise _StatusError(
                    409,
                    "AlreadyExists",
                    f'{resource} "{meta["name"]}" already exists',
                    meta["name"],
                    resource,
                )
            obj = self._put(resource, body, "ADDED")
            if resource == "jobs":
                obj["status"] = {"active": 1, "startTime": _now()}
                self._put("jobs", obj, "MODIFIED")
                self._start_pod(obj)
            return copy.deepcopy(obj)

    def _start_pod(self, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        ns = job["metadata"]["namespace"]
        template = job["spec"]["template"]
        labels = dict(template["metadata"].get("labels", {}))
        labels[JOB_NAME_LABEL] = name
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name}-{uuid.uuid4().hex[:5]}",
                "namespace": ns,
                "labels": labels,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": _now(),
            },
            "spec": template["spec"],
            "status": {"phase": "Running"},
        }
        self._put("pods", pod, "ADDED")
        script = self.scripts.get(name, self.default_script)
        if isinstance(script, list):  # one Script per creation of the same Job name
            script = script.pop(0) if len(script) > 1 else script[0]
        self.logs[pod["metadata"]["name"]] = list(script.log)
        if script.outcome != "hang":
            timer = threading.Timer(script.delay, self._finish, (ns, name, pod, script))
            timer.daemon = True
            timer.start()

    def _finish(self, ns: str, name: str, pod: dict[str, Any], script: Script) -> None:
        with self.cond:
            job = self.objects.get(("jobs", ns, name))
            if job is None:
                return
            ok = script.outcome == "succeed"
            pod = copy.deepcopy(pod)
            pod["status"] = {"phase": "Succeeded" if ok else "Failed"}
            self._put("pods", pod, "MODIFIED")
            cond = {"type": "Complete", "status": "True", "lastTransitionTime": _now()}
            if not ok:
                cond = {
                    "type": "Failed",
                    "status": "True",
                    "reason": script.reason,
                    "message": script.message,
                    "lastTransitionTime": _now(),
                }
            job = copy.deepcopy(job)
            job["status"] = {
                "active": 0,
                "succeeded": 1 if ok else 0,
                "failed": 0 if ok else 1,
                "conditions": [cond],
            }
            self._put("jobs", job, "MODIFIED")

    def delete(self, resource: str, ns: str, name: str, propagation: str | None) -> dict:
        with self.cond:
            obj = self.objects.get((resource, ns, name))
            if obj is None:
                raise _StatusError(
                    404, "NotFound", f'{resource} "{name}" not found', name, resource
                )
            self._put(resource, copy.deepcopy(obj), "DELETED")
            if resource == "jobs" and propagation in ("Background", "Foreground"):
                for key, dep in list(self.objects.items()):
                    labels = dep["metadata"].get("labels", {})
                    owners = dep["metadata"].get("ownerReferences", [])
                    if (key[0] == "pods" and labels.get(JOB_NAME_LABEL) == name) or any(
                        o.get("uid") == obj["metadata"]["uid"] for o in owners
                    ):
                        self._put(key[0], copy.deepcopy(dep), "DELETED")
            return {"kind": "Status", "apiVersion": "v1", "status": "Success"}

    def select(self, resource: str, ns: str, query: dict[str, list[str]]) -> list[dict]:
        labels = _selector(query.get("labelSelector", [""])[0])
        fields = _selector(query.get("fieldSelector", [""])[0])
        out = []
        for (res, ons, _), obj in sorted(self.objects.items()):
            if res == resource and ons == ns and _matches(obj, labels, fields):
                out.append(copy.deepcopy(obj))
        return out

    # -- lifecycle ----------------------------------------------------------------------------

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
        if self.server:
            with self.cond:
                self.rv += 1
                self.cond.notify_all()
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


class _StatusError(Exception):
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


def _selector(text: str) -> dict[str, str]:
    return dict(p.split("=", 1) for p in text.split(",") if "=" in p)


def _matches(obj: dict, labels: dict[str, str], fields: dict[str, str]) -> bool:
    have = obj["metadata"].get("labels", {})
    if any(have.get(k) != v for k, v in labels.items()):
        return False
    return all(k != "metadata.name" or obj["metadata"]["name"] == v for k, v in fields.items())


_ROUTE = re.compile(
    r"^/(?:api/v1|apis/batch/v1)/namespaces/(?P<ns>[^/]+)/(?P<res>jobs|pods|services)"
    r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>log))?$"
)
_VERBS = {"POST": "create", "DELETE": "delete"}


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

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _handle(self, method: str) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"null") if length else None
        self.kube.requests.append((method, url.path, query, body))
        match = _ROUTE.match(url.path)
        try:
            if not match:
                raise _StatusError(404, "NotFound", f"the server could not find {url.path}")
            ns, res, name, sub = match.group("ns", "res", "name", "sub")
            watching = query.get("watch", ["false"])[0].lower() == "true"
            verb = _VERBS.get(method) or ("watch" if watching else "get" if name else "list")
            resource = f"{res}/log" if sub else res
            if (verb, resource) in self.kube.forbidden:
                raise _StatusError(
                    403,
                    "Forbidden",
                    f'{res} is forbidden: User "tester" cannot {verb} resource "{resource}" in '
                    f'API group "" in the namespace "{ns}"',
                    name or "",
                    res,
                )
            if ns not in self.kube.namespaces:
                raise _StatusError(
                    404, "NotFound", f'namespaces "{ns}" not found', ns, "namespaces"
                )
            if method == "POST":
                self._send(201, self.kube.create(res, ns, body))
            elif method == "DELETE":
                policy = query.get("propagationPolicy", [None])[0] or (body or {}).get(
                    "propagationPolicy"
                )
                self._send(200, self.kube.delete(res, ns, name, policy))
            elif sub:
                self._log(ns, name, query)
            elif name:
                obj = self.kube.objects.get((res, ns, name))
                if obj is None:
                    raise _StatusError(404, "NotFound", f'{res} "{name}" not found', name, res)
                self._send(200, obj)
            elif watching:
                self._watch(res, ns, query)
            else:
                with self.kube.cond:
                    items = self.kube.select(res, ns, query)
                    rv = str(self.kube.rv)
                kind = {"jobs": "JobList", "pods": "PodList", "services": "ServiceList"}[res]
                self._send(
                    200,
                    {
                        "kind": kind,
                        "apiVersion": "v1",
                        "metadata": {"resourceVersion": rv},
                        "items": items,
                    },
                )
        except _StatusError as e:
            self._send(e.code, e.body)

    def _log(self, ns: str, pod: str, query: dict) -> None:
        if ("pods", ns, pod) not in self.kube.objects:
            raise _StatusError(404, "NotFound", f'pods "{pod}" not found', pod, "pods")
        lines = self.kube.logs.get(pod, [])
        self._send(200, "".join(f"{line}\n" for line in lines).encode(), "text/plain")

    def _watch(self, res: str, ns: str, query: dict) -> None:
        since = int(query.get("resourceVersion", ["0"])[0] or 0)
        timeout = float(query.get("timeoutSeconds", ["30"])[0])
        labels = _selector(query.get("labelSelector", [""])[0])
        fields = _selector(query.get("fieldSelector", [""])[0])
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deadline = time.monotonic() + timeout
        sent = since
        try:
            while time.monotonic() < deadline:
                with self.kube.cond:
                    pending = [e for e in self.kube.events if e[0] > sent]
                    if not pending:
                        self.kube.cond.wait(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
                        continue
                for rv, kind, resource, obj in pending:
                    sent = rv
                    if (
                        resource == res
                        and obj["metadata"]["namespace"] == ns
                        and _matches(obj, labels, fields)
                    ):
                        self._chunk(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
            self._chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")
