"""A run records what trained it: the image, the revision and the lock baked into it."""

from __future__ import annotations

import json

from trainer import contract
from trainer.train import provenance


def test_in_an_image_the_build_info_and_the_pods_image_are_recorded(tmp_path, monkeypatch):
    info = {
        "revision": "abc123",
        "created": "2026-12-04T20:00:00+00:00",
        "version": "0.1.0",
        "source": "https://example.org/x",
        "lock": "image-cpu.lock",
        "lock_sha256": "9" * 64,
    }
    (tmp_path / "build.json").write_text(json.dumps(info))
    monkeypatch.setenv(contract.BUILD_INFO_ENV, str(tmp_path / "build.json"))
    monkeypatch.setenv(contract.IMAGE_REF_ENV, "reg/imdb-train:0.1.0")
    assert provenance() == {"in_image": True, "image": "reg/imdb-train:0.1.0", **info}


def test_outside_an_image_the_run_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv(contract.BUILD_INFO_ENV, str(tmp_path / "absent.json"))
    got = provenance()
    assert got["in_image"] is False and got["note"].startswith("trained outside an image (no ")
    (tmp_path / "absent.json").write_text("[1]")
    assert "not an object" in provenance()["note"]
