#!/usr/bin/env bash
# The GPU work of session 4 (issues 13-16) as one device run; results land in $OUT (8 files come back at most).
#   bash benchmarks/device_run.sh          (from the repo root on the device machine, .whl carried: see below)
# Parts, each with its own time limit, in order: the GPU-only tests (CUDA graph vs eager), DDP on one GPU vs no DDP
# (CIFAR-10 ResNet-34), the recipe ablation (experiments/recipe_ablation.py, every combination, 4 processes), the
# peers suite at the paper's scale (20 epochs). torchattacks and plotly travel as wheels in .whl/ (ignored by git):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 --platform any -d .whl torchattacks==3.3.0 plotly narwhals
# SMALL=1: a seconds-long dry run of the script itself (CPU).
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
OUT=${OUT:-/tmp/gmreg-device}; mkdir -p "$OUT"
PY=${PY:-python3}
ONLY=${ONLY:-tests,ddp,ablation,peers}
has() { [[ ,$ONLY, == *,$1,* ]]; }
if [ -d .whl ] && [ -z "${SMALL:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
nvidia-smi -L 2>/dev/null; $PY -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
if [ -n "${SMALL:-}" ]; then DEV=cpu; ABL="--epochs 1 --limit 320 --seeds 0"; PEERS="--scale smoke"; DDP="--per-batch 100"
else DEV=cuda; ABL="--seeds ${SEEDS:-0,1}"; PEERS="--scale paper"; DDP=""; fi
part() { local name=$1 t0=$SECONDS; shift; echo "== $name $(date +%T)"; "$@" 2>> "$OUT/stderr.log"
  echo "== $name rc=$? $((SECONDS - t0)) s"; }
has tests && part tests timeout 150 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py
has ddp && part ddp sh -c "timeout 150 $PY benchmarks/gpu_ddp_check.py $DDP > $OUT/ddp.json"
has ablation && part ablation timeout ${ABLATION_S:-240} $PY experiments/recipe_ablation.py --grid $ABL \
    --jobs ${JOBS:-4} --device $DEV --out results/recipe-ablation
has peers && part peers timeout ${PEERS_S:-300} $PY -m gmreg_lab reproduce --suite peers $PEERS --device $DEV \
    --jobs ${JOBS:-4} --out results/mnist-peers-paper --no-progress ${PEER_METHODS:+--methods $PEER_METHODS}
tar czf "$OUT/results.tgz" --exclude=runs results/recipe-ablation results/mnist-peers-paper 2>/dev/null
ls -la "$OUT"
