#!/usr/bin/env bash
# The GPU checks of issue 12 in one short run, for a machine with CUDA (about 5 minutes):
#   PYTHON=python3 scripts/gpu_checks.sh OUT_DIR
# PYTHON must have a CUDA build of torch (the Makefile's venv pins the CPU build); l2o and its
# dependencies are installed into it without touching torch. Writes OUT_DIR/gpu_checks.log and
# the benchmark's JSON line OUT_DIR/bench.json.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
out="${1:-runs/gpu-checks}"
mkdir -p "$out"
exec > >(tee "$out/gpu_checks.log") 2>&1
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA'; print(torch.__version__, torch.cuda.get_device_name(0))" || exit 1
"$PY" -m pip install --quiet -e '.[dev]' 2>&1 | grep -v "is ignored" || true
export OMP_NUM_THREADS=1
echo "== CUDA tests"
"$PY" -m pytest -q -rs tests/test_devices.py
echo "== l2o train quadratic --device cuda (end to end)"
time "$PY" -m l2o.cli.main train quadratic --device cuda --set iterations=30 --out "$out/train"
"$PY" -m l2o.cli.main evaluate "$out/train" adam:lr=0.1 quadratic --device cuda --out "$out/eval"
echo "== benchmark: CPU and GPU in the same run (B = 128, 8192, then doubling)"
"$PY" benchmarks/meta_throughput.py --iterations 3 --device cuda --largest | tee "$out/bench.txt"
tail -n 1 "$out/bench.txt" > "$out/bench.json"
