"""Read finished runs from a store: `python -m jobs.results list|show|compare|pull --output URI`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from jobs import _cli
from jobs.spec import MODELS, SpecError
from trainer import manifest
from trainer.contract import (
    CHECKPOINT_DIR,
    CONFIG,
    LATEST,
    LATEST_ALIAS,
    METRICS,
    NEIGHBOURS,
    NEIGHBOURS_MODEL,
    RUN_ID_HELP,
    SUCCESS,
    is_run_id,
    run_key,
)
from trainer.distribute import describe_devices
from trainer.promotion import PointerError, read_latest
from trainer.storage import NotFoundError, StoreContentError, open_store


def _read_json(store, key: str) -> Any:
    return json.loads(store.read_bytes(key))


def _read_doc(store, key: str) -> dict[str, Any]:
    """A run's JSON object, or one line naming the file when it is not one (damaged,
    nested past the parser's depth, a list) or not the one the run published (its
    manifest in _SUCCESS records another digest)."""
    model, run_id, name = (key.split("/", 2) + ["", ""])[:3]
    try:
        raw = store.read_bytes(key)
        if name in manifest.RECORDED:
            run = store.child(model, run_id)
            manifest.check(run, manifest.read(run), name, raw)
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else f"not JSON ({e})"
        raise StoreContentError(f"{store.uri}/{key} is corrupt: {reason}") from None
    if not isinstance(doc, dict):
        raise StoreContentError(
            f"{store.uri}/{key} is corrupt: a JSON {type(doc).__name__}, expected an object"
        )
    return doc


def _runs(store, model: str) -> dict[str, set[str]]:
    """run id -> the file names directly in it (enough to tell complete runs apart).

    Names that are not run ids (a stray folder, a hostile key) are not runs: skipped.
    """
    runs: dict[str, set[str]] = {}
    for key in store.list(model):
        parts = key.split("/")
        if len(parts) >= 3 and parts[0] == model and is_run_id(parts[1]):
            runs.setdefault(parts[1], set()).add(parts[2])
    return runs


def _latest(store, model: str) -> dict[str, Any] | None:
    """The promoted run's pointer, checked (promotion.read_latest): a PointerError is bad
    store content, exit 2, as in predict and the trainer."""
    return read_latest(store.child(model), model)


def _resolve(store, model: str, run_id: Any) -> str:
    if model not in MODELS:
        raise SpecError(f"invalid model {model!r}: expected one of {', '.join(MODELS)}")
    run_id = str(run_id)
    if run_id != LATEST_ALIAS:
        if not is_run_id(run_id):
            raise SpecError(f"invalid run id {run_id!r}: expected {RUN_ID_HELP}")
        return run_id
    latest = _latest(store, model)
    if latest is None:
        raise StoreContentError(
            f"no promoted {model} run in {store.uri} ({model}/{LATEST} is missing); "
            "pass --run-id (see `python -m jobs.results list`)"
        )
    return latest["run_id"]


def _finished(store, model: str, run_id: str) -> None:
    if not store.exists(f"{model}/{run_id}/{SUCCESS}"):
        what = "does not exist" if not store.list(f"{model}/{run_id}") else "is incomplete"
        raise StoreContentError(
            f"run {model}/{run_id} in {store.uri} {what} (no {SUCCESS}): still running, failed, "
            "or a wrong --run-id"
        )


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "-" if value is None else str(value)


def list_runs(output: str | None = None, model: str | None = None) -> None:
    """List runs in a store: state, test accuracy, and which run is promoted (*).

    Args:
        output: the store, e.g. gs://bucket/imdb or a local directory (default:
            $IMDB_TRAIN_OUTPUT, else ./runs, where the trainer writes by default).
        model: only this model.
    """
    store = open_store(output)
    rows = [("MODEL", "RUN-ID", "STATE", "TEST-ACC", "EPOCHS", "PROMOTED")]
    for m in [model] if model else MODELS:
        try:
            latest = (_latest(store, m) or {}).get("run_id")
        except PointerError as e:
            # The runs are still worth listing; the broken pointer is named once.
            print(f"warning: {e}", file=sys.stderr)
            latest = None
        for run_id, files in sorted(_runs(store, m).items()):
            metrics: dict[str, Any] = {}
            state = "complete" if SUCCESS in files else "incomplete"
            if METRICS in files:
                try:
                    metrics = _read_json(store, run_key(m, run_id, METRICS))
                except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                    state = "corrupt"  # one damaged run must not hide the others
                if not isinstance(metrics, dict):
                    metrics, state = {}, "corrupt"
            rows.append((
                m,
                run_id,
                state,
                _fmt(metrics.get("test_accuracy")),
                _fmt(metrics.get("epochs_completed")),
                "*" if str(latest) == run_id else "",
            ))  # fmt: skip
    if len(rows) == 1:
        print(f"no runs in {store.uri}")
        return
    _table(rows)


def _build_line(build: Any) -> str:
    """The image, revision and lock a run was trained with (config.json's `build`)."""
    if not isinstance(build, dict):
        return "unknown (a run from before builds were recorded)"
    if not build.get("in_image"):
        return str(build.get("note") or "outside an image")
    sha = str(build.get("lock_sha256") or "")[:12]
    return (f"image {build.get('image') or '(reference not set)'}, revision "
            f"{build.get('revision')}, {build.get('lock')} sha256 {sha}")  # fmt: skip


def _devices_line(found: Any) -> str:
    """The GPUs, driver and CUDA/cuDNN a run trained on (config.json's devices)."""
    if not isinstance(found, dict):
        return "unknown (a run from before devices were recorded)"
    return describe_devices(found)


def _cost_line(cost: dict[str, Any]) -> str:
    """Pod-seconds, GPU-seconds and the node of metrics.json's cost."""
    node = cost.get("node") or "outside Kubernetes"
    where = ", ".join(x for x in (cost.get("accelerator"), "Spot" if cost.get("spot") else "")
                      if x)  # fmt: skip
    return (f"{_fmt(cost.get('pod_seconds'), 1)} pod-s, {_fmt(cost.get('gpu_seconds'), 1)} "
            f"GPU-s on {node}" + (f" ({where})" if where else ""))  # fmt: skip


def _neighbours_lines(neighbours: dict[str, Any], k: int) -> list[str]:
    lines = [f"nearest words ({neighbours.get('metric', '?')} distance):"]
    for query, hits in neighbours.get("queries", {}).items():
        words = ", ".join(f"{h['word']} ({h['distance']:.3f})" for h in hits[:k])
        lines.append(f"  {query}: {words}")
    return lines


def show(
    output: str | None = None,
    model: str = "lstm",
    run_id: str = LATEST_ALIAS,
    k: int = 5,
    json_output: bool = False,
) -> None:
    """Show a finished run's metrics and nearest-neighbour words.

    Args:
        output: the store, e.g. gs://bucket/imdb or a local directory (default:
            $IMDB_TRAIN_OUTPUT, else ./runs, where the trainer writes by default).
        model: mean or lstm.
        run_id: a run id, or `latest` for the promoted run.
        k: neighbours shown per query word.
        json_output: print metrics and neighbours as one JSON object.
    """
    store = open_store(output)
    run_id = _resolve(store, model, run_id)
    _finished(store, model, run_id)
    metrics = _read_doc(store, run_key(model, run_id, METRICS))
    neighbours = _read_doc(store, run_key(model, run_id, NEIGHBOURS))
    try:
        config = _read_doc(store, run_key(model, run_id, CONFIG))
    except (NotFoundError, StoreContentError):
        config = None
    build = config.get("build") if isinstance(config, dict) else None
    found = config.get("devices") if isinstance(config, dict) else None
    if json_output:
        doc = {"metrics": metrics, "neighbours": neighbours, "build": build, "devices": found}
        print(json.dumps(doc, indent=2))
        return
    history = metrics.get("history") or {}
    seconds = metrics.get("epoch_seconds") or []
    print(f"run {model}/{run_id} in {store.uri}")
    print(f"  test accuracy  {_fmt(metrics.get('test_accuracy'))}")
    print(f"  test loss      {_fmt(metrics.get('test_loss'))}")
    print(f"  epochs         {_fmt(metrics.get('epochs_completed'))}")
    print(f"  replicas       {_fmt(metrics.get('replicas'))}")
    if seconds:
        print(f"  epoch seconds  {sum(seconds) / len(seconds):.1f} mean")
    print(f"  trained by     {_build_line(build)}")
    print(f"  trained on     {_devices_line(found)}")
    if isinstance(metrics.get("cost"), dict):
        print(f"  cost           {_cost_line(metrics['cost'])}")
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        if history.get(key):
            print(f"  {key:<14} {' '.join(_fmt(v, 3) for v in history[key])}")
    for line in _neighbours_lines(neighbours, int(k)):
        print(line)


def compare(*runs: str, output: str | None = None, k: int = 3) -> None:
    """Compare finished runs side by side.

    Args:
        *runs: MODEL/RUN_ID (or MODEL/latest), e.g. lstm/r1 mean/latest.
        output: the store, e.g. gs://bucket/imdb or a local directory (default:
            $IMDB_TRAIN_OUTPUT, else ./runs, where the trainer writes by default).
        k: neighbours shown per query word.
    """
    if len(runs) < 2:
        raise SpecError(f"invalid runs {list(runs)!r}: expected at least two MODEL/RUN_ID")
    store = open_store(output)
    loaded = []
    for ref in runs:
        model, sep, run_id = str(ref).partition("/")
        if not sep or not run_id:
            raise SpecError(f"invalid run {ref!r}: expected MODEL/RUN_ID, e.g. lstm/r1")
        run_id = _resolve(store, model, run_id)
        _finished(store, model, run_id)
        loaded.append((
            f"{model}/{run_id}",
            _read_doc(store, run_key(model, run_id, METRICS)),
            _read_doc(store, run_key(model, run_id, NEIGHBOURS)),
        ))  # fmt: skip
    rows = [("", *(name for name, _, _ in loaded))]
    for key in ("test_accuracy", "test_loss", "epochs_completed", "replicas"):
        rows.append((key, *(_fmt(m.get(key)) for _, m, _ in loaded)))
    rows.append((
        "epoch_seconds",
        *(_fmt(sum(s) / len(s), 1) if (s := m.get("epoch_seconds")) else "-" for _, m, _ in loaded),
    ))  # fmt: skip
    # What each run cost beside what it reached (metrics.json's cost; "-" for older runs).
    for key, digits in (("pod_seconds", 1), ("gpu_seconds", 1), ("node", 0), ("spot", 0)):
        rows.append((key, *(_fmt((m.get("cost") or {}).get(key), digits) if m.get("cost")
                            else "-" for _, m, _ in loaded)))  # fmt: skip
    queries = [
        q for q in loaded[0][2].get("queries", {}) if all(q in n["queries"] for *_, n in loaded)
    ]
    for query in queries:
        rows.append((
            f"near '{query}'",
            *(", ".join(h["word"] for h in n["queries"][query][:k]) for *_, n in loaded),
        ))  # fmt: skip
    _table(rows)


def pull(
    output: str | None = None,
    model: str = "lstm",
    run_id: str = LATEST_ALIAS,
    dest: str = ".",
    checkpoints: bool = False,
) -> None:
    """Download a finished run's artifacts to DEST/MODEL/RUN_ID/.

    Args:
        output: the store, e.g. gs://bucket/imdb or a local directory (default:
            $IMDB_TRAIN_OUTPUT, else ./runs, where the trainer writes by default).
        model: mean or lstm.
        run_id: a run id, or `latest` for the promoted run.
        dest: local directory.
        checkpoints: also pull checkpoints/ (large; only needed to resume).
    """
    if Path(dest).exists() and not Path(dest).is_dir():
        raise SpecError(f"invalid dest {dest!r}: it is a file; expected a directory")
    store = open_store(output)
    run_id = _resolve(store, model, run_id)
    _finished(store, model, run_id)
    prefix = f"{model}/{run_id}/"
    target = Path(dest) / model / run_id
    count = 0
    for key in store.list(f"{model}/{run_id}"):
        rel = key[len(prefix) :]
        if not rel or (rel.startswith(f"{CHECKPOINT_DIR}/") and not checkpoints):
            continue
        path = (target / rel).resolve()
        if target.resolve() not in path.parents:
            raise _cli.CommandFailedError(f"refusing to write {key!r} outside {target}")
        store.download_file(key, path)
        count += 1
    print(f"pulled {count} files of {model}/{run_id} from {store.uri} to {target}")


def summary(output: str | None = None, word: str = "great", k: int = 10) -> None:
    """Each model's promoted run in one line, then the words nearest to WORD.

    The neighbours come from the mean model: its embedding is trained to carry the
    sentiment directly, while the LSTM's embedding is only its input layer.

    Args:
        output: the store (default: $IMDB_TRAIN_OUTPUT, else ./runs).
        word: the query word (one of the trainer's --neighbours).
        k: how many neighbours.
    """
    store = open_store(output)
    found = False
    for m in MODELS:
        latest = _latest(store, m)
        if latest is None:
            continue
        found = True
        print(
            f"{m:<5} test accuracy {float(latest['test_accuracy']):.2%}  (run {latest['run_id']})"
        )
    if not found:
        raise StoreContentError(f"no promoted runs in {store.uri}; train one first")
    latest = _latest(store, NEIGHBOURS_MODEL)
    if latest is None:
        return
    neighbours = _read_doc(store, run_key(NEIGHBOURS_MODEL, str(latest["run_id"]), NEIGHBOURS))
    hits = neighbours.get("queries", {}).get(word)
    if hits is None:
        print(
            f"{word!r} was not a query of that run (its queries: "
            f"{', '.join(neighbours.get('queries', {})) or 'none'})"
        )
        return
    words = ", ".join(h["word"] for h in hits[:k])
    print(f"words nearest to {word!r} ({NEIGHBOURS_MODEL} model): {words}")


COMMANDS = {"list": list_runs, "show": show, "compare": compare, "pull": pull, "summary": summary}
main = _cli.entrypoint(COMMANDS, "jobs.results")

if __name__ == "__main__":
    sys.exit(main())
