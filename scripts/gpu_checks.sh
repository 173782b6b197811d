#!/usr/bin/env bash
# The GPU checks in one short run, for a machine with CUDA (about 6 minutes):
#   PYTHON=python3 scripts/gpu_checks.sh OUT_DIR
# PYTHON must have a CUDA build of torch (the Makefile's venv pins the CPU build). The machine
# may have no network: l2o runs from src/ (PYTHONPATH) and a missing dependency is taken from
# the wheels in WHEELS (default .whl/, `pip download` them for its Python), never fetched.
# DEVICE=cpu runs the same steps without a GPU (a dry run of this script). Writes
# OUT_DIR/gpu_checks.log, the benchmark's JSON line OUT_DIR/bench.json and the timings of the
# `general` recipe OUT_DIR/general_timing.txt. Each step has its own time limit.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
out="${1:-runs/gpu-checks}"
mkdir -p "$out"
exec > >(tee "$out/gpu_checks.log") 2>&1
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
if [ "$DEVICE" != cpu ]; then
  "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; print('torch', torch.__version__, torch.cuda.get_device_name(0))" || exit 1
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
fi
if ! "$PY" -c "import optuna" 2>/dev/null && ls "${WHEELS:-.whl}"/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/l2o-site "${WHEELS:-.whl}"/*.whl
  export PYTHONPATH="/tmp/l2o-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
L=("$PY" -m l2o.cli.main)
"$PY" -c "import l2o, optuna; print('l2o from', l2o.__file__)" || exit 1
nproc --all; "$PY" -c "import os; print('load', os.getloadavg())"

echo "== CUDA tests"
timeout 240 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_devices.py tests/test_compare_cli.py -k "cuda or device"

echo "== l2o train quadratic --device $DEVICE (end to end), then evaluate it there"
ms() { echo $(( $(date +%s%N) / 1000000 )); }
start=$(ms)
timeout 180 "${L[@]}" train quadratic --device "$DEVICE" --set iterations=30 --out "$out/train"
echo "train wall: $(( $(ms) - start )) ms"
timeout 120 "${L[@]}" evaluate "$out/train" adam:lr=0.1 quadratic --device "$DEVICE" --instances 32 --out "$out/eval"

echo "== the general recipe (configs/general.toml, B = 16, unrolls to 1,000): 4 meta-iterations"
echo "   on $DEVICE and, at the same time, on one CPU thread, same seed (so the same unroll lengths)"
general=(train mixture --config configs/general.toml --set batch_size=16 --set iterations=4
         --set horizon=100 --set meta_lr=0.001 --set horizon_sampling=log_uniform
         --set val_every=1000 --set val_instances=2 --set checkpoint_every=1000)
timing() {  # DEVICE NAME BATCH
  local t0; t0=$(ms)
  timeout 300 "${L[@]}" "${general[@]}" --device "$1" --set batch_size="$3" --out "$out/general-$2" \
    >"$out/general-$2.log" 2>&1
  echo "general recipe, 4 iterations of B = $3 on $1: rc $?, $(( $(ms) - t0 )) ms"
}
timing "$DEVICE" dev 16 >"$out/timing-dev.txt" &
on_device=$!
timing cpu cpu 16 >"$out/timing-cpu.txt" &
wait "$on_device" $!  # by PID: a bare wait would also wait for the log's tee
[ "$DEVICE" != cpu ] && timing "$DEVICE" dev128 128 >"$out/timing-dev128.txt"
cat "$out"/timing-*.txt >"$out/general_timing.txt"
cat "$out/general_timing.txt"
tail -n 3 "$out"/general-*.log

[ "${SKIP_BENCH:-0}" = 1 ] && exit 0
echo "== benchmark: CPU and $DEVICE in the same run (B = 128, 8192, then doubling)"
timeout 300 "$PY" benchmarks/meta_throughput.py --iterations 3 --device "$DEVICE" \
  $([ "$DEVICE" != cpu ] && echo --largest) | tee "$out/bench.txt"
tail -n 1 "$out/bench.txt" >"$out/bench.json"
