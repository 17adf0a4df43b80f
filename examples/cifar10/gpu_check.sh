#!/usr/bin/env bash
# The GPU check, as one script: train the example's Cifar10ResNet on one GPU to the test accuracy
# target (94%), report the wall time and the test accuracy; then the fast recipe (config_fast.yml):
# the whole command's wall time, the test accuracy with and without test-time augmentation and the
# first epoch whose validation reached 94%; then the host synchronisations per training step of the
# fast recipe in steady state (benchmarks/sync_check.py, under torch.cuda.set_sync_debug_mode) and
# the overhead benchmark's GPU ratios for both recipes. Usage, from a clone with dlscaffold installed
# and a CUDA build of torch:
#
#   bash examples/cifar10/gpu_check.sh path/to/cifar10-jpg.tar.gz [EPOCHS]
#
# It writes gpu_check.json and gpu_check_fast.json (wall seconds, test accuracies, the run folder)
# next to this script.
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

# The fast recipe: config_fast.yml as it is, on the GPU, the whole command timed.
FAST_LOGS="$(mktemp -d)"
start=$(date +%s.%N)
python train.py config_fast.yml "logging_params.logging_dir=$FAST_LOGS"
train_end=$(date +%s.%N)
FAST_RUN="$(ls -d "$FAST_LOGS"/*/ | head -n 1)"
eval_start=$(date +%s.%N)
python evaluate.py "$FAST_RUN" --split test --json "$FAST_LOGS/tta.json"
eval_end=$(date +%s.%N)
python evaluate.py "$FAST_RUN" --split test --no-tta --json "$FAST_LOGS/plain.json"
python - "$start" "$train_end" "$eval_start" "$eval_end" "$FAST_LOGS" "$FAST_RUN" <<'PY'
import json, sys
start, end, eval_start, eval_end = map(float, sys.argv[1:5])
logs, run = sys.argv[5], sys.argv[6]
tta, plain = (json.load(open(f"{logs}/{name}.json"))["metrics"]["Cifar10Airbench/Accuracy"] for name in ("tta", "plain"))
rows = [json.loads(line) for line in open(f"{run}/metrics.jsonl")]
reached = [r["epoch"] for r in rows if r["split"] == "val" and r.get("Cifar10Airbench/Accuracy", 0) >= 0.94]
report = {
    "train_wall_seconds": round(end - start, 1),
    "evaluate_wall_seconds": round(eval_end - eval_start, 1),
    "test_accuracy_tta": tta,
    "test_accuracy_no_tta": plain,
    "first_val_epoch_at_94": reached[0] if reached else None,
    "run": run,
}
json.dump(report, open("gpu_check_fast.json", "w"), indent=2)
print(f"GPU check (fast): test accuracy {100 * tta:.2f}% with TTA, {100 * plain:.2f}% without, "
      f"{end - start:.0f} s for the whole train command (target: 94%)")
PY
cd "$HERE/../.."
python benchmarks/sync_check.py --json "$HERE/gpu_check_sync.json" || echo "sync check: host synchronisations every step (above)"
python benchmarks/overhead.py --device cuda --precision bf16 || echo "benchmark: see benchmarks/README.md"
python benchmarks/overhead.py --device cuda --recipe fast || echo "benchmark: see benchmarks/README.md"
