"""`python -m bench`: data preparation, then reference vs our trainer, paired; JSON + BENCHMARKS.md.

The full run also times the LSTM's CPU kernel two ways (bench/lstm_kernel.py) and runs
`--profile fast` once per repeat with its own seed, for the time-to-accuracy target.
`python -m bench --smoke` is the CI mode: a few hundred reviews, one epoch, one repeat,
its own temporary directories, and BENCHMARKS.md untouched unless --update-md is given.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import tempfile
from pathlib import Path

from trainer.contract import MODELS

SMOKE_SAMPLE = 300


def run(
    smoke: bool = False,
    data: str = "",
    models: str = ",".join(MODELS),
    repeats: int = 3,
    epochs: int = 3,
    sample: int = 0,
    data_repeats: int = 3,
    results_dir: str = "",
    update_md: bool | None = None,
    md: str = "",
    ours_args: str = "",
    gpu: bool = False,
    parity: str = "",
    scale: bool = False,
    scale_factors: str = "",
    scale_encode: bool = False,
) -> None:
    """Benchmark our trainer against the plain Keras reference; prints the result's path.

    Args:
        smoke: tiny CI run (first 300 reviews per split, 1 epoch, 1 repeat, temp results dir).
        data: aclImdb tarball (default ../shared/data/aclImdb_v1_labelled.tar.gz).
        models: comma-separated subset of the models (default: all).
        repeats: paired repeats (reference and ours alternate which goes first).
        epochs: epochs per training run.
        sample: if > 0, the first N reviews of each split.
        data_repeats: cold and cached data-preparation measurements.
        results_dir: where the JSON goes (default bench-results/, or a temp dir when smoke).
        update_md: rewrite the table in BENCHMARKS.md (default: yes, except when smoke).
        md: the markdown file to update (default BENCHMARKS.md in the project root).
        ours_args: extra flags for `python -m trainer`, space-separated (experiments).
        gpu: run the GPU benchmark (bench/gpu.sh) instead; needs TensorFlow with a GPU.
        parity: a finished run (directory or URI) to check instead: its test split through
            the training encoder, trainer.predict and the serving SavedModel (bench/parity.py).
        scale: the data-at-scale benchmark instead (bench/scale.py): corpora of
            `scale_factors` times IMDB, ours beside the code before the stream; its table
            goes to BENCHMARKS.md (or `md`), its JSON to `results_dir`.
        scale_encode: only the encode time per review of each corpus, on one core, wall
            and CPU seconds (`scale_factors`, default 1,32).
    """
    from bench import report, runner

    if scale or scale_encode:
        from bench import scale as scale_bench

        if scale_encode:
            factors = scale_factors or scale_bench.ENCODE_FACTORS
            raise SystemExit(scale_bench.main_encode(factors, md=md, results_dir=results_dir))
        factors = scale_factors or scale_bench.FACTORS
        raise SystemExit(scale_bench.main(factors, md=md, results_dir=results_dir))
    if parity:
        from bench import parity as parity_bench

        raise SystemExit(parity_bench.main(["--run", str(parity)]))

    if gpu:
        import subprocess

        script = runner.ROOT / "bench" / "gpu.sh"
        raise SystemExit(subprocess.call(["bash", str(script)], cwd=runner.ROOT))
    if smoke:
        sample = sample or SMOKE_SAMPLE
        epochs, repeats, data_repeats = 1, 1, 1
    if update_md is None:
        update_md = not smoke
    # fire turns "mean,lstm" into a tuple: accept both shapes.
    names = models if isinstance(models, list | tuple) else str(models).split(",")
    chosen = tuple(str(m).strip() for m in names if str(m).strip())
    bad = [m for m in chosen if m not in MODELS]
    if bad or not chosen:
        raise SystemExit(
            f"error: unknown models {bad or chosen!r}: expected some of {', '.join(MODELS)}"
        )
    source = Path(data) if data else runner.SHARED_TARBALL
    if not source.exists():
        raise SystemExit(f"error: data {source} does not exist: expected an aclImdb tarball")
    result = runner.benchmark(
        str(source.resolve()),
        models=chosen,
        repeats=int(repeats),
        epochs=int(epochs),
        sample=int(sample),
        data_repeats=int(data_repeats),
        ours_args=tuple(str(ours_args).split()),
        log=lambda msg: print(msg, flush=True),
        kernel=not smoke,
    )
    result["settings"]["smoke"] = bool(smoke)
    if results_dir:
        out_dir = Path(results_dir)
    elif smoke:
        out_dir = Path(tempfile.mkdtemp(prefix="bench-results-"))
    else:
        out_dir = runner.ROOT / "bench-results"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y-%m-%dT%H%M%S")
    path = out_dir / f"{stamp}{'-smoke' if smoke else ''}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"result: {path}")
    if update_md:
        md_path = Path(md) if md else runner.ROOT / "BENCHMARKS.md"
        report.update(md_path, result, path.name)
        print(f"updated {md_path}")
    for name, ok in result["targets_met"].items():
        print(f"  target {name}: {'met' if ok else 'NOT met'}")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import fire

    try:
        fire.Fire(run, command=argv, name="bench")
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
            return 2
        return e.code or 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
