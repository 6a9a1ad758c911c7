"""Encoding a corpus four times IMDB's size stays within a memory bound: the output arrays
plus a constant, not the corpus (the whole-corpus code needs about 3 GB for it).

The load runs in a subprocess (its own peak RSS) that watches its own resident memory and
exits 3 the moment it passes the bound, so a regression costs seconds, never the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench import corpora
from tests.helpers import ROOT
from trainer import contract

pytestmark = pytest.mark.slow

FACTOR = 4
MB = 1 << 20
# Measured: 0.25 GB peak for 4x (81 MB of arrays), each tokenising worker 0.12 GB.
CONSTANT = 250 * MB  # the interpreter, numpy, the vocabulary, the stream's buffers
WORKER_BOUND = 250 * MB  # a tokenising worker holds a few chunks, whatever the corpus

CHILD = r"""
import json, os, resource, sys, threading, time

bound = int(sys.argv[3])
page = os.sysconf("SC_PAGE_SIZE")

def watch():
    while True:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * page
        if rss > bound:
            print(f"resident memory {rss} bytes passed the bound {bound}", flush=True)
            os._exit(3)
        time.sleep(0.02)

def hwm():
    with open("/proc/self/status") as f:
        line = next(x for x in f if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024

threading.Thread(target=watch, daemon=True).start()
from trainer import data

ds = data.load(sys.argv[1], cache_dir=sys.argv[2])
print(json.dumps({
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child started from a
    # big process (a pytest worker that imported TensorFlow) would report that one's size.
    "peak": hwm(),
    "worker_peak": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    "reviews": ds.stats["reviews"],
}))
"""


@pytest.fixture(scope="module")
def big_corpus(shared_tarball, tmp_path_factory):
    return corpora.build(shared_tarball, FACTOR, tmp_path_factory.mktemp("corpus") / "4x.tar.gz")


def test_encoding_4x_imdb_stays_within_the_arrays_plus_a_constant(big_corpus, tmp_path):
    reviews = FACTOR * 50_000
    arrays = reviews * (contract.MAX_REVIEW_LENGTH + 1) * 4  # x and y, int32
    bound = 2 * arrays + CONSTANT  # the arrays, and once more while the rows are placed
    env = {**os.environ, "PYTHONPATH": str(ROOT), contract.PROGRESS_ENV: "0"}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(big_corpus), str(tmp_path / "cache"), str(bound)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["reviews"] == reviews
    assert result["peak"] <= bound
    assert result["worker_peak"] <= WORKER_BOUND
