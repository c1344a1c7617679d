#!/usr/bin/env bash
# The checks a lent GPU machine runs, in one go (under 8 minutes on one H200), everything written
# under one results folder:
#
#   bash benchmarks/gpu_check.sh [OUT]                 # OUT: default benchmarks/results/gpu/<date>
#   bash benchmarks/gpu_check.sh --cpu-dry-run OUT     # every step on the CPU, tiny sizes (tests)
#
# 1. devices.log      the CUDA tests of the suite (tests/test_devices.py -k cuda: float32 CUDA steps
#                     against float64 CPU steps, CUDA-graph replays)
# 2. step_time.*      benchmarks/step_time.py --device cuda (every rule, MLP, ResNet-20, overhead)
# 3. memory.*         benchmarks/memory.py --device cuda (peak memory of a step, every rule)
# 4. ddp.json         a 2-process run (torchrun, NCCL on 2 GPUs; gloo on the CPU with one GPU) against
#                     a 1-process run of the same short MLP run: the largest weight difference
# 5. data_pipeline.*  benchmarks/data_pipeline.py (loader images/s, ResNet-18's GPU step rate)
#
# Each step has its own time limit and log; summary.txt says ok / FAILED (exit status) per step;
# the script exits 1 if any step failed, after running all of them. GPU_CHECK_STEPS="memory ddp"
# runs only those steps; PYTHON (default python3) is the interpreter.
set -u
DRY=0
if [ "${1:-}" = "--cpu-dry-run" ]; then DRY=1; shift; fi
OUT="${1:-benchmarks/results/gpu/$(date +%Y-%m-%d)}"
PY="${PYTHON:-python3}"
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
export PYTHONPATH=. OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
: > "$OUT/summary.txt"
FAILED=0

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to OUT/NAME.log, record the outcome
  local name=$1 limit=$2; shift 2
  if [ -n "${GPU_CHECK_STEPS:-}" ] && [[ " $GPU_CHECK_STEPS " != *" $name "* ]]; then
    echo "$name skipped (not in GPU_CHECK_STEPS)" >> "$OUT/summary.txt"
    return
  fi
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  if [ $rc -eq 0 ]; then
    echo "$name ok ($((SECONDS - t0)) s)" | tee -a "$OUT/summary.txt"
  else
    echo "$name FAILED (exit $rc$([ $rc -eq 124 ] && echo ', time limit'), $((SECONDS - t0)) s): see $name.log" | tee -a "$OUT/summary.txt"
    FAILED=1
  fi
}

TORCH=$("$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.device_count())" 2>&1)
GPUS=$(echo "$TORCH" | awk '/^torch /{print $NF}')
GPUS=${GPUS:-0}
{
  date -u +%Y-%m-%dT%H:%M:%SZ
  git rev-parse --short HEAD 2>/dev/null
  nvidia-smi 2>/dev/null || echo "no nvidia-smi"
  echo "$TORCH"
  echo "cpus $(getconf _NPROCESSORS_ONLN)"
} > "$OUT/env.txt" 2>&1
if [ $DRY -eq 1 ]; then
  DEV=cpu
  STEP_ARGS=(--workload overhead --rules fa --reps 2 --steps 1 --warmup 1)
  MEM_ARGS=(--workload overhead --rules fa --warmup 1)
  DATA_ARGS=(--images 8 --classes 2 --width 64 --height 48 --image-size 32 --batch-size 4 --workers 0 --repeats 1)
  DDP_TRAIN=128
else
  DEV=cuda
  STEP_ARGS=(--reps 20)
  MEM_ARGS=()
  DATA_ARGS=(--images 400 --workers 0,2,4,8 --repeats 2)
  DDP_TRAIN=4096
fi
DDP_DEVICE=cpu  # two processes need two GPUs (NCCL, one each); with fewer, gloo on the CPU
if [ $DRY -eq 0 ] && [ "$GPUS" -ge 2 ]; then DDP_DEVICE=cuda; fi

step devices 150 "$PY" -m pytest -q tests/test_devices.py -k cuda
step step_time 150 "$PY" benchmarks/step_time.py --device $DEV --tag gpu --out "$OUT" "${STEP_ARGS[@]}"
step memory 60 "$PY" benchmarks/memory.py --device $DEV --tag gpu --out "$OUT" "${MEM_ARGS[@]}"

ddp() {  # a short MLP run in 1 and in 2 processes; ddp.json: the largest weight difference
  local data="fake_cifar10:train=$DDP_TRAIN,test=256" size=3072 root="${CIRCUITS_DATA_ROOT:-../shared/data}"
  if [ -e "$root/MNIST/raw/train-images-idx3-ubyte" ] || [ -e "$root/MNIST/raw/train-images-idx3-ubyte.gz" ]; then
    data=mnist size=784  # the real MNIST where it is (the lent machine may have none: then generated data)
  fi
  cat > "$OUT/ddp_experiment.py" <<EOF
from circuits import Circuit, Training
from connectomes import Dense
from plasticity import make_rule
from populations import Input, Layer, Readout

c = Circuit("ddp-check", seed=0)
x = c.add(Input("pixels", $size))
h = c.add(Layer("h", 128))
y = c.add(Readout("classes", 10))
c.connect(x, h, Dense())
c.connect(h, y, Dense())
c.feedback(make_rule("fa"))
circuit = c
training = Training(data="$data", epochs=1, batch_size=64, lr=0.05, train_size=$DDP_TRAIN)
EOF
  local common=("$OUT/ddp_experiment.py" --rule fa --epochs 1 --data-root "$root" --device $DDP_DEVICE --no-progress)
  rm -rf "$OUT/ddp-one" "$OUT/ddp-two"
  "$PY" -m circuits.run "${common[@]}" --out "$OUT/ddp-one" || return 1
  "$PY" -m torch.distributed.run --standalone --nproc_per_node=2 -m circuits.run "${common[@]}" --out "$OUT/ddp-two" || return 1
  "$PY" - "$OUT" "$data" "$DDP_DEVICE" <<'EOF'
import json, sys, torch
from circuits.train import load_checkpoint
out, data, device = sys.argv[1:]
a, b = (load_checkpoint(f"{out}/ddp-{n}/checkpoint.pt")["model"] for n in ("one", "two"))
diff = max((a[k] - b[k]).abs().max().item() for k in a if torch.is_tensor(a[k]))
metrics = [json.loads(open(f"{out}/ddp-{n}/metrics.jsonl").read().splitlines()[-1]) for n in ("one", "two")]
record = {"data": data, "device": device, "max_weight_difference": diff,
          "test_acc": [m["test_acc"] for m in metrics], "seconds": [m["seconds"] for m in metrics]}
json.dump(record, open(f"{out}/ddp.json", "w"), indent=1)
print(record)
sys.exit(0 if diff < 1e-4 else 1)
EOF
}
export -f ddp
export OUT PY DDP_DEVICE DDP_TRAIN
step ddp 120 bash -c ddp
step data_pipeline 120 "$PY" benchmarks/data_pipeline.py --device $DEV --tag gpu --out "$OUT" "${DATA_ARGS[@]}"
rm -rf "$OUT/ddp-one" "$OUT/ddp-two"
exit $FAILED
