#!/usr/bin/env bash
# The GPU check, as one script: train the example's Cifar10ResNet on one GPU to the test accuracy
# target (94%), report the wall time and the test accuracy, then run the overhead benchmark's
# GPU ratios. Usage, from a clone with dlscaffold installed and a CUDA build of torch:
#
#   bash examples/cifar10/gpu_check.sh path/to/cifar10-jpg.tar.gz [EPOCHS]
#
# It writes gpu_check.json (wall seconds, test accuracy, the run folder) next to this script.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ARCHIVE="${1:?pass the path to cifar10-jpg.tar.gz}"
EPOCHS="${2:-40}"
cd "$HERE"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this check needs a GPU')"
if [ ! -d data/cifar10-jpg/train ]; then
  mkdir -p data/cifar10-jpg && tar xzf "$ARCHIVE" -C data/cifar10-jpg
fi
LOGS="$(mktemp -d)"
start=$(date +%s.%N)
# bf16 autocast, channels-last convolutions, a larger batch and more epochs than the CPU default (the
# config's one-cycle schedule stretches with them);
# num_workers 0: decoding is done once at start-up and augmentation runs on the GPU (transform_batch).
python train.py "training_params.max_training_epochs=$EPOCHS" training_params.precision=bf16 \
  training_params.channels_last=true dataloading_params.batch_size=512 "logging_params.logging_dir=$LOGS"
train_end=$(date +%s.%N)
RUN="$(ls -d "$LOGS"/*/ | head -n 1)"
python evaluate.py "$RUN" --split test --json "$LOGS/test.json"
python - "$start" "$train_end" "$LOGS/test.json" "$RUN" <<'PY'
import json, sys
start, end, result, run = float(sys.argv[1]), float(sys.argv[2]), json.load(open(sys.argv[3])), sys.argv[4]
accuracy = result["metrics"]["Cifar10ResNet/Accuracy"]
report = {"train_wall_seconds": round(end - start, 1), "test_accuracy": accuracy, "run": run}
json.dump(report, open("gpu_check.json", "w"), indent=2)
print(f"GPU check: test accuracy {100 * accuracy:.2f}% after {end - start:.0f} s of training (target: 94%)")
PY
cd "$HERE/../.."
python benchmarks/overhead.py --device cuda --precision bf16 || echo "benchmark: see benchmarks/README.md"
