"""k8s/serving/*.yaml against KServe's own InferenceService CRD schema (tests/schemas/)."""

from __future__ import annotations

import copy
import gzip
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from trainer import contract

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = Path(__file__).parent / "schemas" / "kserve-inferenceservice-v1beta1.json.gz"
MANIFEST = ROOT / "k8s" / "serving" / "inferenceservice.yaml"
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?\Z")


def strict(schema: dict) -> dict:
    """The CRD schema with unknown fields refused: the API server prunes them silently
    and `kubectl apply` (strict field validation) rejects them; a typo must not pass."""
    out = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(out)
    # metadata is validated by the API server itself, not by the CRD schema.
    out["properties"]["metadata"] = {"type": "object"}
    return out


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(gzip.decompress(SCHEMA.read_bytes()))
    return jsonschema.Draft7Validator(strict(schema))


def errors(validator, doc) -> list[str]:
    return [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


def load() -> dict:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]
    assert len(docs) == 1
    return docs[0]


def test_inferenceservice_validates_against_the_kserve_crd(validator):
    doc = load()
    assert (doc["apiVersion"], doc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert errors(validator, doc) == []
    assert DNS_1035.match(doc["metadata"]["name"]) and len(doc["metadata"]["name"]) <= 63


def test_inferenceservice_serves_the_runs_savedmodel_with_tensorflow():
    model = load()["spec"]["predictor"]["model"]
    assert model["modelFormat"]["name"] == "tensorflow"
    # TF Serving's model_base_path: the directory that holds the numbered versions.
    assert model["storageUri"].startswith("gs://")
    assert model["storageUri"].endswith(f"/{contract.SERVING_DIR}")
    assert contract.SERVING_VERSION.isdigit()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("spec", "predictor", "model", "storageURI"), "gs://b/x", "storageURI"),
        (("spec", "predictor", "minReplicas"), "one", "is not of type 'integer'"),
        (("spec", "predictor", "model", "modelFormat"), {"version": "2"}, "'name' is a required"),
        (("spec", "predictr"), {}, "predictr"),
    ],
    ids=["typo-field", "wrong-type", "missing-required", "typo-section"],
)
def test_the_validator_rejects_broken_manifests(validator, path, value, message):
    doc = load()
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    found = errors(validator, doc)
    assert any(message in e for e in found), found
