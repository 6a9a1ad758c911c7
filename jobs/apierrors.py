"""The failures of the Kubernetes API, each one line that names the object and the fix:
what jobs.kube raises, translated from the client's exceptions."""

from __future__ import annotations

import json
from typing import Any

from kubernetes.client.exceptions import ApiException

from trainer import contract
from trainer.contract import KnownError


class ClusterError(KnownError):
    """An API call failed; the message names the object and the fix."""

    exit_code = contract.EXIT_FAILED


class ClusterNotFoundError(ClusterError):
    """The object named is not there (the API answered 404 NotFound for it)."""


class NotKubernetesError(ClusterError):
    """The server answered, but not as a Kubernetes API server does (a login proxy's HTML
    page, another service on the port): the command fails (exit 1), naming the server."""


def not_kubernetes(host: str, e: Exception, status: object, content_type: object) -> ClusterError:
    """The one line for an answer that is not a Kubernetes API object."""
    detail = " ".join(str(e).split())[:120]
    return NotKubernetesError(
        f"the server at {host} answered HTTP {status} "
        f"({content_type or 'no content type'}) with something that is not a Kubernetes "
        f"API object ({type(e).__name__}: {detail}); is it the cluster's API server, not "
        "a login proxy or another port? check your kubeconfig's server and --context"
    )


# What the client raises while reading an answer it cannot make objects of: pydantic's
# ValidationError is a ValueError; JSON and charset errors are too.
UNREADABLE = (ValueError, TypeError, AttributeError, LookupError)


def status_details(e: ApiException) -> dict[str, Any]:
    try:
        body = json.loads(e.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def translate(
    e: Exception, verb: str, resource: str, namespace: str, name: str | None = None, group: str = ""
) -> ClusterError:
    what = f"{resource.rstrip('s')} {name}" if name else resource
    if not isinstance(e, ApiException):
        return ClusterError(
            f"cannot {verb} {what} in namespace {namespace}: the API server is unreachable "
            f"({type(e).__name__}: {e}); check your kubeconfig context and network"
        )
    body = status_details(e)
    details = body.get("details") or {}
    message = body.get("message") or e.reason or ""
    if e.status == 409 and verb == "create":
        return ClusterError(
            f"{what} already exists in namespace {namespace}; pass --run-id to start another run"
        )
    if e.status == 403:
        api_group = group or "core"
        return ClusterError(
            f"forbidden: cannot {verb} {what} in namespace {namespace}: your account needs the "
            f"RBAC verb {verb!r} on resource {resource!r} (API group {api_group!r}); apply "
            f"k8s/rbac.yaml and bind it to you ({message})"
        )
    if e.status == 404 and (details.get("kind") == "namespaces" or "namespaces" in message):
        return ClusterError(f"namespace {namespace} does not exist; create it or pass --namespace")
    if e.status == 404:
        return ClusterNotFoundError(f"{what} not found in namespace {namespace}")
    if e.status == 401:
        return ClusterError(
            f"cannot {verb} {what} in namespace {namespace}: the cluster rejected your "
            "credentials (expired token?); refresh your kubeconfig"
        )
    if e.status == 422:
        return ClusterError(
            f"the API server rejected {what} in namespace {namespace} as invalid: {message}"
        )
    return ClusterError(
        f"cannot {verb} {what} in namespace {namespace}: HTTP {e.status} {e.reason}: {message}"
    )
