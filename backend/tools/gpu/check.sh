#!/bin/bash
# The GPU check of issue 9, in one `run` call on the lent GPU machine, from the project root:
#   bash backend/tools/gpu/check.sh            (carry [".whl", ".gpu"]; README "Checking the CUDA path")
# Steps, each bounded by what is left of BUDGET seconds (default 570):
#   1. install the carried wheels (.whl/*.whl) into /tmp/site; compile gsplat (about a minute the first time)
#   2. the gpu-marked tests (tests/test_gpu.py): preview, draft and final on CUDA, gsplat vs CPU, the PLY check
#   3. backend.tools.gpu_parity: gsplat vs the CPU reference at 2k/20k/100k Gaussians, gsplat fwd+bwd ms
#   4. backend.tools.bench --device cuda on SCENE (default .gpu/scenes/3dmom_scene_0, else the demo scene):
#      per-stage seconds and peak GPU memory for QUALITIES (preview,final) at BENCH_SIZES (1280), FRAMES (120),
#      and each result folder's size
# Env: BUDGET, SKIP_TESTS=1, SKIP_PARITY=1, SKIP_BENCH=1, BENCH_SIZES, QUALITIES, FRAMES, SCENE.
# Everything it writes comes back under $OUT (logs, parity.json, bench.csv/png/md).
START=$(date +%s); BUDGET=${BUDGET:-570}
OUT=${OUT:-/tmp/gpu_check_out}; mkdir -p "$OUT"
ROOT=$PWD
left() { echo $(( BUDGET - ($(date +%s) - START) )); }
step() { echo; echo "=== $1 [$(( $(date +%s) - START )) s]"; }
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16} HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} LOOPSCAPE_THREADS=${LOOPSCAPE_THREADS:-8}

step "environment"
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
fi
export PYTHONPATH=/tmp/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}
python3 -c "import imageio_ffmpeg" 2>/dev/null || export PYTHONPATH=$PYTHONPATH:$ROOT/backend/tools/gpu/shim
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 - <<'PY' || { echo "no CUDA here: run this on the GPU machine"; exit 2; }
import torch
assert torch.cuda.is_available()
cap = torch.cuda.get_device_capability()
print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(), "sm", f"{cap[0]}.{cap[1]}")
open("/tmp/arch", "w").write(f"{cap[0]}.{cap[1]}")
PY
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$(cat /tmp/arch)}
t0=$(date +%s)
python3 -c "from backend.infra.device import gsplat_status; s = gsplat_status(); print('gsplat', 'ok' if s.ok else s.reason)" 2>&1 | tail -3
echo "gsplat compile/load s $(( $(date +%s) - t0 ))"

if [ -z "$SKIP_TESTS" ]; then
  step "gpu-marked tests"
  # tests/pytest.ini makes tests/ pytest's rootdir, so the root package (the Blender add-on,
  # which imports bpy) is never imported here.
  python3 -c "import pytest" 2>/dev/null || echo "pytest is missing: carry its wheels (README)"
  (timeout $(( $(left) - 60 > 60 ? 240 : 60 )) python3 -m pytest -p no:cacheprovider -m gpu tests/test_gpu.py \
      -q -s 2>&1 | grep -v '^{"event"' | tail -40) | tee "$OUT/gpu_tests.log"
fi

if [ -z "$SKIP_PARITY" ] && [ "$(left)" -gt 90 ]; then
  step "gsplat vs the CPU reference"
  timeout 150 python3 -m backend.tools.gpu_parity --json "$OUT/parity.json" 2>&1 | tail -8 | tee "$OUT/parity.log"
fi

if [ -z "$SKIP_BENCH" ] && [ "$(left)" -gt 60 ]; then
  SCENE=${SCENE:-.gpu/scenes/3dmom_scene_0}
  scene_arg=(); [ -f "$SCENE/image.png" ] && scene_arg=(--scene "$SCENE")
  step "benchmark ${scene_arg[*]:-demo scene}: sizes ${BENCH_SIZES:-1280}, ${QUALITIES:-preview,final}, ${FRAMES:-120} frames"
  timeout $(( $(left) - 10 )) python3 -m backend.tools.bench --device cuda --sizes ${BENCH_SIZES:-1280} \
      --frames ${FRAMES:-120} --qualities ${QUALITIES:-preview,final} --loop-lengths "${scene_arg[@]}" \
      --out /tmp/bench 2>&1 | tail -40
  cp /tmp/bench/bench.* "$OUT/" 2>/dev/null
  for d in /tmp/bench/runs/*/out; do [ -d "$d" ] && echo "result folder $(du -sh --exclude=work "$d" | cut -f1) $d"; done
fi
echo; echo "done in $(( $(date +%s) - START )) s"
