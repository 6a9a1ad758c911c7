"""The README's promise that `_SUCCESS` is written last, held by a test.

A real (tiny) Keras model is published through a store that records every write; the
marker must come after every other artifact, so a reader that sees it sees a whole run.
"""

from __future__ import annotations

import numpy as np

from trainer import contract
from trainer.config import TrainConfig
from trainer.state import RunState
from trainer.storage import open_store


class RecordingStore:
    """A real local store that also records the order of the keys written."""

    def __init__(self, inner, order):
        self.inner, self.order = inner, order

    def write_bytes(self, key, data, **kw):
        self.order.append(key)
        return self.inner.write_bytes(key, data, **kw)

    def upload_file(self, path, key, **kw):
        self.order.append(key)
        return self.inner.upload_file(path, key, **kw)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_success_marker_is_written_after_every_other_artifact(tmp_path):
    from trainer.artifacts import FinishedRun, publish
    from trainer.data import Dataset
    from trainer.models import build_model

    words = {w: i + 1 for i, w in enumerate(["great", "bad", "film", "plot", "good", "awful"])}
    cfg = TrainConfig(model="mean", run_id="order", vocab_size=16, max_review_length=8,
                      embedding_dim=4, neighbours=("great",), k=2)  # fmt: skip
    model = build_model("mean", cfg)
    x = np.random.RandomState(0).randint(0, 16, size=(8, 8)).astype(np.int32)
    y = np.array([0, 1] * 4, dtype=np.int32)
    dataset = Dataset(x, y, x, y, words, source="test", sha256="0" * 64)
    state = RunState()
    state.add_epoch(0.1, {"loss": 0.69, "accuracy": 0.5, "val_loss": 0.69, "val_accuracy": 0.5})
    order: list[str] = []
    store = RecordingStore(open_store(str(tmp_path / "out")).child("mean").child("order"), order)
    workdir = tmp_path / "work"
    workdir.mkdir()
    run = FinishedRun(cfg=cfg, model=model, dataset=dataset, state=state, replicas=1,
                      test_loss=0.69, test_accuracy=0.5, workdir=workdir, chief=True)  # fmt: skip
    publish(run, store)
    assert order[-1] == contract.SUCCESS, order[-5:]
    assert order.count(contract.SUCCESS) == 1
    for key in (contract.METRICS, contract.NEIGHBOURS, contract.WORD_INDEX, contract.MODEL_FILE,
                contract.EMBEDDING_VECTORS):  # fmt: skip
        assert key in order[:-1], key
