#!/usr/bin/env bash
# The GPU checks of issue 5 as one device run (see BENCHMARKS.md): benchmarks (eager, CUDA graphs, compiled model),
# a profile of the CIFAR-10 step, the real loop on CIFAR-shaped data, real MNIST epochs eager vs graphs vs compiled,
# and the notebooks under nbval on the GPU. Results land in $OUT.
# Usage on the device machine, from the repo root:  bash benchmarks/device_check.sh
# The notebook part needs jupyter/plotly there: fetch them once here as wheels into .whl/ (ignored by git) with
#   python3 -m pip download -d .whl --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any nbval ipykernel ipywidgets \
#       plotly anywidget
# drop the wheels of packages the machine already has (pytest, numpy, ...), and carry .whl with the run.
# At most 8 files come back from a device run: each part writes one JSON, stderr.log and notebooks.log the rest.
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}   # the kit from this checkout (notebook kernels run in notebooks/)
OUT=${OUT:-/tmp/gmreg-device}; mkdir -p "$OUT"
PY=${PY:-python3}
SMALL=${SMALL:-}          # SMALL=1: seconds-long dry run (CPU), to check the script itself
ONLY=${ONLY:-cifar,profile,mnist,loop,train,notebooks}   # parts to run, in this order of priority
has() { [[ ,$ONLY, == *,$1,* ]]; }
nvidia-smi -L 2>/dev/null; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
$PY -c "import triton; print('triton', triton.__version__)" 2>&1 | tail -1; which gcc
if [ -n "$SMALL" ]; then B="--batches 1 --rounds 1"; T="--limit 256 --eval 64 --eval-10k 64"; DEV=cpu
else B="--batches 20 --rounds 3"; T=""; DEV=cuda; fi
C=--compile; [ -n "$SMALL" ] && C=   # time the compiled model too (not in the CPU dry run: compiling there takes minutes)
run() {   # one part: its JSON to $OUT/<name>.json, its stderr appended to $OUT/stderr.log (8 files come back at most)
  local name=$1 rc; shift; local t0=$SECONDS; echo "== $name $(date +%T)"
  "$@" > "$OUT/$name.json" 2> "/tmp/$name.err"; rc=$?
  { echo "== $name rc=$rc"; cat "/tmp/$name.err"; } >> "$OUT/stderr.log"
  echo "rc=$rc $((SECONDS - t0)) s"; grep -v "it/s\]" "/tmp/$name.err" | tail -3; }
if has cifar; then   # CIFAR-10 ResNet-34 at the paper's batch: eager, CUDA graphs, compiled model + graphs, reference
run bench_cifar_b64 timeout 330 $PY -m gmreg_lab bench --device $DEV --dataset cifar10 --batch-size 64 \
    ${SMALL:+--model resnet18} $B --methods normal,proposed $C --json
fi
has profile && run profile_cifar_b64 timeout 150 $PY benchmarks/gpu_profile.py --device $DEV --dataset cifar10 \
    --batch-size 64 ${SMALL:+--model resnet18 --steps 1 --no-compile}
if has mnist; then
run bench_mnist_b128 timeout 150 $PY -m gmreg_lab bench --device $DEV --batch-size 128 $B $C --json
run bench_mnist_b32 timeout 120 $PY -m gmreg_lab bench --device $DEV --batch-size 32 $B \
    --methods normal,proposed,pgd $C --json
fi
has loop && run loop_cifar timeout 150 $PY benchmarks/gpu_cifar_loop.py --device $DEV \
    ${SMALL:+--model resnet18 --per-batch 240 --epochs 1 --no-compile}
has train && run train_check timeout 200 $PY benchmarks/gpu_train_check.py --device $DEV $T
has cifar128 && run bench_cifar_b128 timeout 200 $PY -m gmreg_lab bench --device $DEV --dataset cifar10 \
    --batch-size 128 ${SMALL:+--model resnet18} $B --methods normal,proposed $C --json
if has notebooks && [ -z "$SMALL" ] && [ -d .whl ]; then   # notebooks: jupyter/plotly travel as wheels (.whl, see BENCHMARKS.md)
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
  echo "== notebooks"; t0=$SECONDS
  GMREG_SMOKE=1 timeout 240 $PY -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env notebooks \
    > "$OUT/notebooks.log" 2>&1; echo "rc=$? $((SECONDS - t0)) s"; tail -5 "$OUT/notebooks.log"
fi
