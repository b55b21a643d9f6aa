#!/usr/bin/env bash
# The GPU checks of issue 5 as one device run (see BENCHMARKS.md): benchmarks (eager and CUDA graphs), a real
# training epoch eager vs graphs, and the notebooks under nbval on the GPU. Results land in $OUT.
# Usage on the device machine, from the repo root:  bash benchmarks/device_check.sh
# The notebook part needs jupyter/plotly there: fetch them once here as wheels into .whl/ (ignored by git) with
#   python3 -m pip download -d .whl --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any nbval ipykernel ipywidgets \
#       plotly anywidget
# drop the wheels of packages the machine already has (pytest, numpy, ...), and carry .whl with the run.
# The CIFAR-10 batch-128 row of BENCHMARKS.md: python3 -m gmreg_lab bench --device cuda --dataset cifar10 \
#   --batch-size 128 --batches 10 --rounds 3 --methods normal,proposed,pgd --json
set -u
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}   # the kit from this checkout (notebook kernels run in notebooks/)
OUT=${OUT:-/tmp/gmreg-device}; mkdir -p "$OUT"
PY=${PY:-python3}
SMALL=${SMALL:-}          # SMALL=1: seconds-long dry run (CPU), to check the script itself
ONLY=${ONLY:-bench,train,notebooks}   # which parts to run
nvidia-smi -L 2>/dev/null; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
if [ -n "$SMALL" ]; then B="--batches 1 --rounds 1"; T="--limit 256 --eval 64 --eval-10k 64"; DEV=cpu
else B="--batches 20 --rounds 3"; T=""; DEV=cuda; fi
run() { local name=$1; shift; local t0=$SECONDS; echo "== $name"; "$@" > "$OUT/$name.json" 2> "$OUT/$name.err"
        echo "rc=$? $((SECONDS - t0)) s"; tail -3 "$OUT/$name.err"; }
if [[ $ONLY == *bench* ]]; then
run bench_mnist_b128 timeout 150 $PY -m gmreg_lab bench --device $DEV --batch-size 128 $B --json
run bench_mnist_b32 timeout 150 $PY -m gmreg_lab bench --device $DEV --batch-size 32 $B --json
run bench_cifar_b64 timeout 200 $PY -m gmreg_lab bench --device $DEV --dataset cifar10 --batch-size 64 \
    ${SMALL:+--model resnet18} $B --json
fi
[[ $ONLY == *train* ]] && run train_check timeout 200 $PY benchmarks/gpu_train_check.py --device $DEV $T
if [[ $ONLY == *notebooks* ]] && [ -z "$SMALL" ] && [ -d .whl ]; then   # notebooks: jupyter/plotly travel as wheels (.whl, see BENCHMARKS.md)
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
  echo "== notebooks"; t0=$SECONDS
  GMREG_SMOKE=1 timeout 240 $PY -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env notebooks \
    > "$OUT/notebooks.log" 2>&1; echo "rc=$? $((SECONDS - t0)) s"; tail -5 "$OUT/notebooks.log"
fi
