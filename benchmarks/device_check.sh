#!/usr/bin/env bash
# One prepared check for a lent GPU machine (no internet; its own JAX). From the project root,
# with the wheels of ../shared/device/prepare_wheels.sh in .whl/ (carried):
#
#   bash benchmarks/device_check.sh            # GPU scale, at most about 8 minutes
#   QUICK=1 OUT=/tmp/out bash benchmarks/device_check.sh   # the same steps at smoke size (CPU)
#
# Steps, each under its own timeout, each writing under $OUT (at most 8 files come back):
#   device.txt        the card, driver and JAX version
#   unit_tests.txt    the SAC, PPO and WPO loss tests on this JAX (portability)
#   overhead_<algo>.{json,txt}  benchmarks/diffusion_overhead.py for diffppo:ppo and diffsac:sac
set -uo pipefail
OUT=${OUT:?set OUT to the folder for results}
QUICK=${QUICK:-0}
mkdir -p "$OUT"
if [ -d .whl ] && ! python3 -c "import brax, mujoco.mjx" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >/dev/null || exit 3
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false

{ date -u; nvidia-smi -L 2>/dev/null || echo "no nvidia-smi";
  python3 -c "import jax; print('jax', jax.__version__, jax.devices())"; } > "$OUT/device.txt" 2>&1

timeout 110 python3 -m pytest -q -x -p no:cacheprovider tests/test_sac_losses.py \
  tests/test_ppo_losses.py tests/test_wpo_losses.py > "$OUT/unit_tests.txt" 2>&1
echo "unit tests exit $?" >> "$OUT/device.txt"

if [ "$QUICK" = 1 ]; then scale=(--quick --env toy/bandit); else scale=(--total-steps 20000 --repeats 2); fi
for pair in diffppo:ppo:130 diffsac:sac:200; do
  name=${pair%%:*}; limit=${pair##*:}; pair=${pair%:*}
  timeout "$limit" python3 benchmarks/diffusion_overhead.py --pairs "$pair" "${scale[@]}" \
    --out "$OUT/overhead_$name.json" > "$OUT/overhead_$name.txt" 2>&1
  echo "overhead $pair exit $?" >> "$OUT/device.txt"
done
cat "$OUT/device.txt"
