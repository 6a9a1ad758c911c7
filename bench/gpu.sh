#!/usr/bin/env bash
# GPU benchmark, for a node where TensorFlow with CUDA is installed (our image,
# tensorflow/tensorflow:2.21.0-gpu + this project): run from the project root as
#   bash bench/gpu.sh            (or: python -m bench --gpu)
# 1. our trainer (python -m trainer, MirroredStrategy over the visible GPUs), both models,
#    3 epochs at global batch 64: per-epoch seconds and test accuracy from metrics.json;
# 2. the plain-Keras grid with the TensorFlow backend (bench/gpu_keras_jax.py): per-epoch
#    time, mixed_float16 against float32, global batch 64/256/1024 with a scaled learning
#    rate, time to 84 % test accuracy, and whether the cuDNN LSTM kernel is in the graph.
# Results go to $OUT (default bench-results/gpu-<date>/); the last lines are the table.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench-results/gpu-$(date +%Y-%m-%dT%H%M%S)}"
DATA="${DATA:-../shared/data/aclImdb_v1_labelled.tar.gz}"
PY="${PYTHON:-python}"
export OUT TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}" IMDB_TRAIN_PROGRESS=0
mkdir -p "$OUT"
"$PY" -c 'import tensorflow as tf, sys
gpus = tf.config.list_physical_devices("GPU")
print("TensorFlow", tf.__version__, "GPUs:", gpus)
sys.exit(0 if gpus else "no GPU visible to TensorFlow: this benchmark needs one")'
"$PY" -m bench.export_npz "$OUT/imdb_encoded.npz" --data "$DATA" --cache-dir "$OUT/cache"
for model in mean lstm; do
  "$PY" -m trainer --model "$model" --data "$DATA" --cache-dir "$OUT/cache" \
    --output "$OUT/runs" --run-id "gpu-$model" --promote=False "$@" | tail -n 5
  "$PY" - "$OUT/runs/$model/gpu-$model/metrics.json" <<'PYEOF'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"trainer {m['model']}: epoch seconds {m['epoch_seconds']}, "
      f"test accuracy {m['test_accuracy']:.4f}, replicas {m['replicas']}")
PYEOF
done
KERAS_BACKEND=tensorflow "$PY" bench/gpu_keras_jax.py --npz "$OUT/imdb_encoded.npz" \
  --json "$OUT/gpu_keras_tensorflow.json" | tee "$OUT/gpu_keras_tensorflow.txt"
echo "results in $OUT"
