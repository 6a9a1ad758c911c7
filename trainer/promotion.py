"""Promotion: the quality gate, and moving `<output>/<model>/latest.json` by compare-and-swap."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time

from trainer import contract
from trainer.config import TrainConfig
from trainer.storage import Store


def to_json(obj) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def gate(cfg: TrainConfig, accuracy: float, current: dict | None) -> str | None:
    """Why a run with this test accuracy must not replace `current`, or None when it may."""
    if accuracy < cfg.min_accuracy:
        return f"test accuracy {accuracy:.4f} is below the floor {cfg.min_accuracy:.4f}"
    if current and accuracy < float(current["test_accuracy"]) - cfg.tolerance:
        return (
            f"test accuracy {accuracy:.4f} is worse than latest run {current['run_id']} "
            f"({float(current['test_accuracy']):.4f}) by more than the tolerance "
            f"{cfg.tolerance:.4f}"
        )
    return None


def promote(cfg: TrainConfig, metrics: dict, model_store: Store, attempts: int = 20) -> dict:
    """Move `<output>/<model>/latest.json` to this run if it passes the quality gate.

    The pointer moves by compare-and-swap, so of concurrent publishers each round has
    exactly one winner and no update is lost; losers re-read and re-judge.

    Returns:
        {"promoted": bool, "reason": str, "previous": {...} | None}
    """
    acc = float(metrics["test_accuracy"])
    for _ in range(attempts):
        raw, version = model_store.read_versioned(contract.LATEST)
        current = json.loads(raw) if raw else None
        if current and current.get("run_id") == cfg.run_id:
            return {"promoted": True, "reason": "already the latest run", "previous": current}
        refused = gate(cfg, acc, current)
        if refused:
            return {"promoted": False, "previous": current, "reason": refused}
        pointer = {
            "run_id": cfg.run_id,
            "model": cfg.model,
            "test_accuracy": acc,
            "test_loss": metrics.get("test_loss"),
            "uri": f"{model_store.uri}/{cfg.run_id}",
            "promoted_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "previous_run_id": current.get("run_id") if current else None,
        }
        if model_store.write_versioned(contract.LATEST, to_json(pointer), version):
            return {
                "promoted": True,
                "previous": current,
                "reason": "first run"
                if not current
                else f"test accuracy {acc:.4f} vs {float(current['test_accuracy']):.4f}",
            }
        time.sleep(0.05 + secrets.randbelow(100) / 1000)
    return {
        "promoted": False,
        "previous": None,
        "reason": f"{contract.LATEST} kept changing; gave up after {attempts} attempts",
    }
