"""`python -m bench --scale`: the data pipeline at 1x to 32x IMDB, ours beside the code before
the stream (a commit, run from its own extracted tree in a subprocess), in the same run.

Per corpus (bench.corpora: N copies of every review, perturbed): reviews, encode seconds
(the trainer's own `encode_seconds`), cached load seconds (`trainer.data.load` from the
warm cache, in a fresh process), epoch seconds of the mean model, peak RSS of the trainer
process (wait4: its largest process) and of its whole process tree (sampled), the test
accuracy. The older code runs only up to `base_max_factor` (its memory grows with the
corpus: 7.3 GB at 8x measured; this machine is shared), and any run whose tree passes `rss_limit`
is stopped and reported as such, never run into the machine's OOM killer. Then encoding on
1 core vs 2 (CPU affinity) for `cores_factor`, and a 2-worker group (loopback processes)
on `group_factor` with each worker's peak RSS.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from bench import corpora
from bench.runner import ROOT, SHARED_TARBALL, machine
from cluster.controlplane import free_ports
from trainer.contract import MAX_DATA_BYTES_ENV, PROGRESS_ENV

BASE_COMMIT = "ed888f9"  # the trainer before the stream (issue 30's "today")
DEFAULT_ROOT = Path.home() / ".cache" / "imdb-train" / "bench"
REVIEWS_1X = 50_000
GB = 1e9
FACTORS = "1,4,8,16,32"  # --scale's corpora
ENCODE_FACTORS = "1,32"  # --scale-encode's: the "32x costs at most 34x the 1x time"
MAX_DATA_BYTES = 8 << 30  # 32x IMDB expands to about 2.5 GB: above the trainer's default

_LOAD = r"""
import json, sys, time
from trainer import data
t0 = time.perf_counter()
ds = data.load(sys.argv[1], cache_dir=sys.argv[2])
print("SCALE " + json.dumps({"seconds": time.perf_counter() - t0, "from_cache": ds.from_cache}))
"""

_ENCODE = r"""
import json, os, sys, time
os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: int(sys.argv[2])]))
from trainer import data
from trainer.data.common import available_cpus
t0 = time.perf_counter()
arrays, _, stats = data.encode_aclimdb(__import__("pathlib").Path(sys.argv[1]), 5000, 100)
print("SCALE " + json.dumps({"seconds": time.perf_counter() - t0, "cores": available_cpus(),
                             "reviews": stats["reviews"]}))
"""


def _tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            p = int(entry)
            children.setdefault(int(fields[1]), []).append(p)
            rss[p] = int(fields[21]) * page
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(children.get(p, []))
    return total


def measure(cmd: list[str], cwd: Path, log: Path, rss_limit: float, env: dict | None = None):
    """Run cmd; (exit code or "over the limit", wall s, peak RSS of its largest process, peak
    RSS of its process tree, the output's SCALE line as a dict)."""
    full_env = {**os.environ, "PYTHONPATH": str(cwd), PROGRESS_ENV: "0",
                "TF_CPP_MIN_LOG_LEVEL": "2", MAX_DATA_BYTES_ENV: str(MAX_DATA_BYTES),
                **(env or {})}  # fmt: skip
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        tree_peak, over = 0, False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            tree_peak = max(tree_peak, _tree_rss(proc.pid))
            if tree_peak > rss_limit and not over:
                over = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.1)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    result = {}
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("SCALE "):
            result = json.loads(line[6:])
    return {
        "exit": "over the memory limit" if over else proc.returncode,
        "wall_seconds": round(wall, 2),
        "peak_rss_bytes": int(usage.ru_maxrss) * 1024,
        "tree_peak_rss_bytes": tree_peak,
        # CPU of the process and its waited-for children (the tokenising workers): unlike
        # the wall time it hardly moves with other people's load on a shared machine.
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        **result,
    }


def base_tree(commit: str, root: Path) -> Path:
    """The project at `commit`, extracted once (git archive) under root."""
    full = subprocess.run(["git", "rev-parse", commit], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    dest = root / f"code-{full[:12]}"
    if not (dest / "trainer").is_dir():
        tmp = root / f".code-{full[:12]}.{os.getpid()}"
        tmp.mkdir(parents=True)
        archive = subprocess.Popen(["git", "archive", full], cwd=ROOT, stdout=subprocess.PIPE)
        with tarfile.open(fileobj=archive.stdout, mode="r|") as tf:
            tf.extractall(tmp, filter="data")
        archive.wait()
        tmp.rename(dest)
    return dest


def _train(code: Path, corpus: Path, work: Path, tag: str, rss_limit: float, env=None) -> dict:
    out, cache = work / "runs", work / f"cache-{tag}"
    cmd = [sys.executable, "-m", "trainer", "--model", "mean", "--epochs", "1",
           "--data", str(corpus), "--output", str(out), "--run-id", tag,
           "--cache-dir", str(cache), "--promote=False"]  # fmt: skip
    r = measure(cmd, code, work / f"{tag}.log", rss_limit, env)
    run = out / "mean" / tag
    if r["exit"] == 0:
        metrics = json.loads((run / "metrics.json").read_text())
        config = json.loads((run / "config.json").read_text())
        r["encode_seconds"] = config["data"].get("encode_seconds")
        r["reviews"] = config["data"].get("reviews")
        r["epoch_seconds"] = metrics["epoch_seconds"][0]
        r["test_accuracy"] = metrics["test_accuracy"]
        load = measure([sys.executable, "-c", _LOAD, str(corpus), str(cache)], code,
                       work / f"{tag}-load.log", rss_limit)  # fmt: skip
        r["cached_load_seconds"] = load.get("seconds")
    return r


def _group(corpus: Path, cache: Path, work: Path, rss_limit: float) -> list[dict]:
    """A 2-worker group (loopback) training 1 epoch of the mean model; each worker's run."""
    ports = free_ports(2)
    hosts = [f"127.0.0.1:{p}" for p in ports]
    procs = []
    for i in range(2):
        tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}
        cmd = [sys.executable, "-m", "trainer", "--model", "mean", "--epochs", "1",
               "--data", str(corpus), "--output", str(work / "group-runs"), "--run-id", "group",
               "--cache-dir", str(cache), "--promote=False"]  # fmt: skip
        env = {"TF_CONFIG": json.dumps(tf_config)}
        procs.append((cmd, env, work / f"group-{i}.log"))
    results: list[dict] = [{}, {}]
    import threading

    def one(i):
        cmd, env, log = procs[i]
        results[i] = measure(cmd, ROOT, log, rss_limit, env)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def corpus(root: Path, factor: int) -> Path:
    """IMDB itself at 1x, else its `factor`-times corpus under `root` (built once)."""
    if factor == 1:
        return SHARED_TARBALL
    return corpora.build(SHARED_TARBALL, factor, corpora.path_for(root, factor))


def run(
    factors: tuple[int, ...] | None = None,
    base_commit: str = BASE_COMMIT,
    base_max_factor: int = 8,
    cores_factor: int = 8,
    group_factor: int = 8,
    root: Path = DEFAULT_ROOT,
    rss_limit: float = 10 * GB,
    log=print,
) -> dict:
    factors = factors or parse_factors(FACTORS)
    root.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    work = root / f"work-{stamp}"
    work.mkdir()
    all_factors = sorted({*factors, cores_factor, group_factor})
    paths = {}
    for f in all_factors:
        paths[f] = corpus(root, f)
    code = {"ours": ROOT, "base": base_tree(base_commit, root)}
    result: dict = {"stamp": stamp, "base_commit": base_commit, "machine": machine(),
                    "load_before": os.getloadavg(), "sizes": {}}  # fmt: skip
    for f in all_factors:
        row = {}
        for name in ("ours", "base") if f in factors else ("ours",):
            if name == "base" and f > base_max_factor:
                row[name] = {
                    "exit": f"not run: above {base_max_factor}x, its memory grows "
                    "with the corpus (7.3 GB at 8x here) on a shared machine"
                }
                continue
            log(f"scale: {name} {f}x (load {os.getloadavg()[0]:.1f})")
            row[name] = _train(code[name], paths[f], work, f"{name}-{f}x", rss_limit)
            row[name]["load"] = os.getloadavg()
            log(f"  {json.dumps(row[name])}")
        result["sizes"][f] = row
    log(f"scale: encode {cores_factor}x on 1 and 2 cores")
    cores = {}
    for n in (1, 2):
        cores[n] = measure([sys.executable, "-c", _ENCODE, str(paths[cores_factor]), str(n)],
                           ROOT, work / f"encode-{n}core.log", rss_limit)  # fmt: skip
        cores[n]["load"] = os.getloadavg()
        log(f"  {n} core(s): {json.dumps(cores[n])}")
    result["cores"] = {"factor": cores_factor, "runs": cores}
    log(f"scale: a 2-worker group on {group_factor}x")
    group = _group(paths[group_factor], work / f"cache-ours-{group_factor}x", work, rss_limit)
    result["group"] = {"factor": group_factor, "workers": group, "load": os.getloadavg()}
    log(f"  {json.dumps(group)}")
    result["load_after"] = os.getloadavg()
    result["work"] = str(work)
    return result


def _gb(n) -> str:
    return f"{n / GB:.2f} GB" if isinstance(n, int | float) and n else "-"


def _s(x, digits=1) -> str:
    return f"{x:.{digits}f}" if isinstance(x, int | float) else "-"


def render(result: dict) -> str:
    lines = [
        f"Run {result['stamp']} (`python -m bench --scale`), base = {result['base_commit']} "
        f"(before the stream); load average {result['load_before'][0]:.1f} at the start, "
        f"{result['load_after'][0]:.1f} at the end: the machine (2 cores) was shared, so the "
        "seconds are noisy; memory is not.",
        "",
        "| data | code | reviews | encode s | cached load s | epoch s | peak RSS (trainer) "
        "| peak RSS (process tree) | test accuracy | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f, row in result["sizes"].items():
        for name in ("ours", "base"):
            r = row.get(name)
            if r is None:
                continue
            if r.get("exit") != 0:
                tree = _gb(r.get("tree_peak_rss_bytes"))
                lines.append(f"| {f}x | {name} | - | - | - | - | - | {tree} | {r['exit']} | |")
                continue
            lines.append(
                f"| {f}x | {name} | {r['reviews']:,} | {_s(r['encode_seconds'])} "
                f"| {_s(r['cached_load_seconds'], 3)} | {_s(r['epoch_seconds'])} "
                f"| {_gb(r['peak_rss_bytes'])} | {_gb(r['tree_peak_rss_bytes'])} "
                f"| {r['test_accuracy']:.4f} | {r['load'][0]:.1f} |"
            )
    c = result["cores"]["runs"]
    one, two = c[1].get("seconds"), c[2].get("seconds")
    speed = f"{one / two:.2f}x" if one and two else "-"
    lines += [
        "",
        f"Encoding {result['cores']['factor']}x (`encode_aclimdb`, no cache write) on 1 core: "
        f"{_s(one)} s (load {c[1]['load'][0]:.1f}); on 2 cores: {_s(two)} s "
        f"(load {c[2]['load'][0]:.1f}): {speed} faster.",
        "",
        f"A 2-worker group (loopback) on {result['group']['factor']}x, 1 epoch of the mean "
        "model from the warm cache: peak RSS "
        + ", ".join(
            f"worker {i} {_gb(w.get('peak_rss_bytes'))} (exit {w.get('exit')})"
            for i, w in enumerate(result["group"]["workers"])
        )  # fmt: skip
        + f"; load {result['group']['load'][0]:.1f}.",
    ]
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"
ENCODE_BEGIN, ENCODE_END = "<!-- scale-encode:begin -->", "<!-- scale-encode:end -->"


def encode_scaling(factors: tuple[int, ...], root: Path = DEFAULT_ROOT, cores: int = 1,
                   rss_limit: float = 10 * GB, log=print) -> dict:  # fmt: skip
    """Encode each corpus (`encode_aclimdb`, no cache, `cores` CPUs by affinity) in a fresh
    process: wall and CPU seconds, and CPU microseconds per review, so "the time per review
    does not grow with the corpus" can be read on a shared machine from the CPU column."""
    root.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M%SZ")
    work = root / f"encode-{stamp}"
    work.mkdir()
    runs = {}
    for f in sorted(set(factors)):
        path = corpus(root, f)
        log(f"scale: encode {f}x on {cores} core(s) (load {os.getloadavg()[0]:.1f})")
        r = measure([sys.executable, "-c", _ENCODE, str(path), str(cores)], ROOT,
                    work / f"encode-{f}x.log", rss_limit)  # fmt: skip
        r["load"] = os.getloadavg()
        runs[f] = r
        log(f"  {json.dumps(r)}")
    return {"stamp": stamp, "cores": cores, "machine": machine(), "runs": runs}


def render_encode(result: dict) -> str:
    runs = result["runs"]
    base = runs[min(runs)]
    lines = [
        f"Run {result['stamp']} (`python -m bench --scale-encode`): `encode_aclimdb` of each "
        f"corpus on {result['cores']} core(s) in a fresh process, no cache; CPU is the process "
        "and its tokenising workers (user + system), which other load hardly moves.",
        "",
        f"| data | reviews | wall s | CPU s | CPU us a review | CPU vs {min(runs)}x | wall vs "
        f"{min(runs)}x | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f, r in runs.items():
        if r.get("exit") != 0:
            lines.append(f"| {f}x | - | - | - | - | - | - | {r.get('exit')} |")
            continue
        per = r["cpu_seconds"] / r["reviews"] * 1e6
        lines.append(
            f"| {f}x | {r['reviews']:,} | {_s(r['seconds'])} | {_s(r['cpu_seconds'])} "
            f"| {per:.0f} | {r['cpu_seconds'] / base['cpu_seconds']:.1f}x "
            f"| {r['seconds'] / base['seconds']:.1f}x | {r['load'][0]:.1f} |"
        )
    return "\n".join(lines) + "\n"


def update_md(
    path: Path,
    result: dict,
    begin: str = BEGIN,
    end: str = END,
    text_of=render,
    title: str = "Data at scale (`python -m bench --scale`)",
) -> None:
    text = path.read_text()
    body = f"{begin}\n{text_of(result)}{end}"
    if begin in text:
        head, rest = text.split(begin, 1)
        text = head + body + rest.split(end, 1)[1]
    else:
        text += f"\n## {title}\n\n{body}\n"
    path.write_text(text)


def parse_factors(factors) -> tuple[int, ...]:
    parts = [x.strip() for x in str(factors).strip("()[]").split(",") if x.strip()]
    if not parts or not all(x.isascii() and x.isdigit() and int(x) >= 1 for x in parts):
        raise SystemExit(
            f"error: --scale-factors {factors!r}: expected positive integers, comma-separated"
        )
    return tuple(int(x) for x in parts)


def _save(result: dict, name: str, results_dir: str) -> None:
    out = Path(results_dir) if results_dir else ROOT / "bench-results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{result['stamp']}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"result: {path}")


def main(factors=FACTORS, base_max_factor=8, md: str = "", results_dir: str = "") -> int:
    fs = parse_factors(factors)
    result = run(fs, base_max_factor=int(base_max_factor), log=lambda m: print(m, flush=True))
    _save(result, "scale", results_dir)
    update_md(Path(md) if md else ROOT / "BENCHMARKS.md", result)
    print(render(result))
    return 0


def main_encode(
    factors=ENCODE_FACTORS, md: str = "", results_dir: str = "", root: Path = DEFAULT_ROOT
) -> int:
    result = encode_scaling(parse_factors(factors), root, log=lambda m: print(m, flush=True))
    _save(result, "scale-encode", results_dir)
    title = "Encode time per review (`python -m bench --scale-encode`)"
    md_path = Path(md) if md else ROOT / "BENCHMARKS.md"
    update_md(md_path, result, ENCODE_BEGIN, ENCODE_END, render_encode, title)
    print(render_encode(result))
    return 0
