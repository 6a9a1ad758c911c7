"""How a Job setting's value is read and checked before anything is sent, as the API server
(or the trainer's own parser) would check it: integers, quantities, names, label maps, the
image reference, tolerations, the output and the trainer's arguments. Each refusal is a
SpecError naming the setting, the value and what is valid."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from trainer import commandline, contract
from trainer.contract import KnownError, new_run_id

# The GPU type of a GPU Job, as the node selector GKE reads: Autopilot refuses GPU pods
# without it, and on Standard with several GPU pools it picks the pool. Required with GPUs.
ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
# GKE's accelerator names known to this version. GKE adds GPUs faster than releases come, so
# another name of the same form is used as given, with a warning naming these (a typo shows
# as a Pending pod whose event names the selector); the chart's schema takes the same form.
GKE_ACCELERATORS = (
    "nvidia-gb200",
    "nvidia-b200",
    "nvidia-h200-141gb",
    "nvidia-h100-mega-80gb",
    "nvidia-h100-80gb",
    "nvidia-a100-80gb",
    "nvidia-tesla-a100",
    "nvidia-l4",
    "nvidia-rtx-pro-6000",
    "nvidia-tesla-t4",
    "nvidia-tesla-v100",
    "nvidia-tesla-p100",
    "nvidia-tesla-p4",
)
# The form of a GKE accelerator name: a label value, nvidia-<model>.
ACCELERATOR_RE = re.compile(r"nvidia-[a-z0-9]([-a-z0-9]{0,54}[a-z0-9])?\Z")
# GPU node pools are usually tainted so that only pods asking for GPUs land there.
GPU_TOLERATIONS: list[dict[str, str]] = [
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
]
# GPUs per node of each GKE GPU type, as its machine types come (g2-standard: 1-8 L4s,
# a3-megagpu-8g: 8 H100s, ...): a pod asking for more than the largest fits no node (it
# stays Pending), so jobs.submit refuses it. A count between them fits a larger node on
# Standard (whose other GPUs other pods use); Autopilot takes only these counts, but
# jobs.submit cannot tell Autopilot (jobs.doctor can). A GPU type not listed is not checked.
GKE_GPU_COUNTS: dict[str, tuple[int, ...]] = {
    "nvidia-gb200": (4,),
    "nvidia-b200": (8,),
    "nvidia-h200-141gb": (8,),
    "nvidia-h100-mega-80gb": (8,),
    "nvidia-h100-80gb": (1, 2, 4, 8),
    "nvidia-a100-80gb": (1, 2, 4, 8),
    "nvidia-tesla-a100": (1, 2, 4, 8, 16),
    "nvidia-l4": (1, 2, 4, 8),
    "nvidia-rtx-pro-6000": (1, 2, 4, 8),
    "nvidia-tesla-t4": (1, 2, 4),
    "nvidia-tesla-v100": (1, 2, 4, 8),
    "nvidia-tesla-p100": (1, 2, 4),
    "nvidia-tesla-p4": (1, 2, 4),
}


class SpecError(KnownError):
    """Bad input to a Job spec: the message names the flag, the value and what is valid."""


DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_QUANTITY = re.compile(r"(\d+(\.\d+)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+)?\Z")
# The OCI distribution reference grammar: [host[:port]/]path[:tag][@digest], lower-case path
# components separated by . _ __ or dashes, a tag of at most 128 word characters.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_PART = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOST = rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?/)?"
IMAGE_REFERENCE = re.compile(
    rf"{_HOST}{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?(?:@sha256:[a-f0-9]{{64}})?\Z"
)
# Label keys and values as the API server checks them: [prefix/]name, a DNS subdomain prefix
# of at most 253 characters, a name (and a value) of at most 63 alphanumerics, - _ or .
_LABEL_NAME = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?\Z")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_TOLERATION_OPERATORS = ("Equal", "Exists")
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}


def to_int(field: str, value: Any, minimum: int) -> int:
    """`value` as an int >= minimum, whatever fire made of the flag; else a SpecError naming it."""
    # fire hands over whatever the flag looked like: 10, "10", 10.0 or True.
    as_int = commandline.as_int(value)
    if as_int is None or as_int < minimum:
        raise SpecError(f"invalid {field} {value!r}: expected an integer >= {minimum}")
    return as_int


def optional_int(field: str, value: Any, minimum: int) -> int | None:
    return None if value is None or value == "" else to_int(field, value, minimum)


def quantity(field: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise SpecError(
            f"invalid {field} {value!r}: expected a Kubernetes quantity like 4, 500m, 16Gi"
        )
    text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if not _QUANTITY.match(text):
        raise SpecError(
            f"invalid {field} {value!r}: expected a Kubernetes quantity like 4, 500m, 16Gi"
        )
    return text


def _json(flag: str, text: str, expected: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise SpecError(f"invalid {flag} {text!r}: not JSON ({e}); expected {expected}") from None


def string_map(what: str, value: Any, *, label: bool) -> dict[str, str]:
    """key=value[,key=value] or a JSON object; keys are label keys, and so are values when
    `label` (a node selector, pod labels; annotation values are free text)."""
    flag = "--" + what.replace(" ", "-")
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            value = _json(flag, text, "key=value[,key=value] or a JSON object")
        else:
            pairs = [p for p in text.split(",") if p.strip()]
            if any("=" not in p for p in pairs):
                raise SpecError(
                    f"invalid {what} {text!r}: expected key=value[,key=value] or a JSON object"
                )
            value = dict(p.strip().split("=", 1) for p in pairs)
    if not isinstance(value, Mapping):
        raise SpecError(
            f"invalid {what} {value!r}: expected key=value[,key=value] or a JSON object"
        )
    out = {str(k): str(v) for k, v in value.items()}
    for key, val in out.items():
        if not _label_key(key):
            raise SpecError(
                f"invalid {what} key {key!r}: expected a label key, [prefix/]name "
                "(name: at most 63 letters, digits, '-', '_' or '.'; prefix: a DNS subdomain)"
            )
        if label and not _LABEL_NAME.match(val):
            raise SpecError(
                f"invalid {what} value {val!r} for {key}: expected at most 63 letters, "
                "digits, '-', '_' or '.', starting and ending with a letter or digit"
            )
    return out


def secret_names(value: Any) -> tuple[str, ...]:
    """Pull secrets: comma-separated names, a list of names, or the chart's [{name: ...}]."""
    if isinstance(value, str):
        text = value.strip()
        value = (_json("--image-pull-secrets", text, "names or a JSON list")
                 if text.startswith("[") else text.split(","))  # fmt: skip
    if isinstance(value, Mapping) or not isinstance(value, (list, tuple)):
        value = [value]
    names = []
    for item in value:
        name = item.get("name") if isinstance(item, Mapping) else item
        name = str(name).strip() if name is not None else ""
        if not name:
            continue
        if not DNS_SUBDOMAIN.match(name) or len(name) > 253:
            raise SpecError(
                f"invalid image pull secret {name!r}: expected a Secret name (lower-case "
                "letters, digits, '-' and '.')"
            )
        names.append(name)
    return tuple(names)


def node_selector(value: Any) -> dict[str, str]:
    return string_map("node selector", value, label=True)


def _label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if not name or not _LABEL_NAME.match(name):
        return False
    return not prefix or (len(prefix) <= 253 and bool(DNS_SUBDOMAIN.match(prefix)))


def tolerations(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        value = (
            _json("--tolerations", value, "a JSON list of toleration objects")
            if value.strip()
            else []
        )
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, Sequence) or not all(isinstance(t, Mapping) for t in value):
        raise SpecError(
            f"invalid tolerations {value!r}: expected a JSON list of objects with "
            f"{', '.join(sorted(_TOLERATION_KEYS))}"
        )
    for t in value:
        unknown = set(t) - _TOLERATION_KEYS
        if unknown:
            raise SpecError(
                f"invalid toleration key {sorted(unknown)[0]!r}: expected one of "
                f"{', '.join(sorted(_TOLERATION_KEYS))}"
            )
        operator = t.get("operator", "Equal")
        if operator not in _TOLERATION_OPERATORS:
            raise SpecError(f"invalid toleration operator {operator!r}: expected Equal or Exists")
        if operator == "Exists" and t.get("value"):
            raise SpecError(f"invalid toleration {dict(t)}: operator Exists takes no value")
        effect = t.get("effect")
        if effect not in (None, "", *_TAINT_EFFECTS):
            raise SpecError(
                f"invalid toleration effect {effect!r}: expected {', '.join(_TAINT_EFFECTS)}"
            )
        if t.get("key") and not _label_key(str(t["key"])):
            raise SpecError(f"invalid toleration key value {t['key']!r}: expected a label key")
    return [dict(t) for t in value]


def check_output(output: str) -> None:
    # Imported here so that importing jobs.spec stays cheap; storage imports no TensorFlow.
    from trainer.storage import StoreError, open_store

    if not (output.startswith("gs://") or output.startswith("file:///") or output.startswith("/")):
        raise SpecError(
            f"invalid output {output!r}: expected gs://bucket/prefix or an absolute path on a "
            "volume mounted into the pod"
        )
    try:
        open_store(output)
    except StoreError as e:
        raise SpecError(f"invalid output {output!r}: {e}") from e


# Trainer flags the spec sets itself; --extra-args may not repeat them (the Job's name and
# labels say which model and run it is, so an override would make them lie).
OWNED_TRAINER_FLAGS = ("--model", "--data", "--output", "--run-id", "--epochs", "--batch-size")


def extra_args(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, (list, tuple)):
        raise SpecError(
            f"invalid extra args {value!r}: expected a list of trainer arguments, "
            'e.g. --extra-args=\'["--promote", "false"]\''
        )
    args = tuple(str(a) for a in value)
    for arg in args:
        flag = arg.split("=", 1)[0].replace("_", "-")
        if flag in OWNED_TRAINER_FLAGS:
            raise SpecError(
                f"invalid extra args {list(args)!r}: {flag} is set by jobs.submit itself; pass "
                f"--{flag[2:]} to jobs.submit instead"
            )
    return args


def check_trainer_args(args: Sequence[str]) -> None:
    """Parse a trainer command line with the trainer's own config, as the pod will.

    Raises:
        SpecError: an unknown flag or a bad value, named as the trainer would name it.
    """
    # TrainConfig and its parser are TensorFlow-free.
    from trainer.config import ConfigError
    from trainer.flags import config_from_args

    placeholder = f"$({contract.RUN_ID_ENV})"
    args = [a if a != placeholder else new_run_id() for a in args]
    try:
        config_from_args(args)
    except ConfigError as e:
        raise SpecError(f"invalid trainer arguments: {e}") from None


def check_accelerator(spec: Any) -> None:
    """A GPU Job names its GPU type; it becomes the node selector GKE requires."""
    if not spec.gpus:
        spec.accelerator = ""  # a CPU Job has none (an IMDB_TRAIN_ACCELERATOR default too)
        return
    acc = "" if spec.accelerator in (None, "") else str(spec.accelerator)
    choices = ", ".join(GKE_ACCELERATORS)
    if not acc:
        raise SpecError(
            f"missing accelerator for --gpus {spec.gpus}: pass --accelerator TYPE or set "
            f"{contract.ACCELERATOR_ENV} (one of {choices}); GPU Jobs need the GPU type "
            f"as the node selector {ACCELERATOR_LABEL} (GKE Autopilot refuses GPU pods "
            "without it), or --gpus 0"
        )
    if not ACCELERATOR_RE.match(acc):
        raise SpecError(
            f"invalid accelerator {acc!r}: expected a GKE GPU type nvidia-<model>, e.g. "
            f"one of {choices}"
        )
    if acc not in GKE_ACCELERATORS:
        print(
            f"warning: accelerator {acc!r} is not one this version knows ({choices}); "
            f"using it as the node selector {ACCELERATOR_LABEL}={acc}: check the spelling "
            "if the pod stays Pending",
            file=sys.stderr,
        )
    given = spec.node_selector.get(ACCELERATOR_LABEL)
    if given not in (None, acc):
        raise SpecError(
            f"--node-selector {ACCELERATOR_LABEL}={given} contradicts --accelerator {acc}"
        )
    spec.accelerator = acc
    spec.node_selector = {**spec.node_selector, ACCELERATOR_LABEL: acc}
