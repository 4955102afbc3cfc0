#!/usr/bin/env bash
# The prepared checks for a lent GPU machine (no internet; its own JAX). From the project root,
# with the wheels of ../shared/device/prepare_wheels.sh in .whl/ (carried):
#
#   OUT=/path PART=throughput bash benchmarks/device_check.sh  # ours vs Brax, about 9 minutes
#   OUT=/path PART=scaling bash benchmarks/device_check.sh     # overhead, sweep, mesh tests, about 7
#   QUICK=1 OUT=/tmp/out bash benchmarks/device_check.sh        # every step at smoke size (CPU)
#
# Each part fits one 10-minute device call; steps run in order, each under its own timeout,
# each writing one JSON under $OUT (at most 8 files come back); logs go to device.txt.
# Timeouts come from an H200 with JAX 0.11.2 (2026-11-27): Brax's train() compiled for 126 s
# (PPO, ant) before its first epoch, ours in 44-55 s; the second repeat of a Brax run loads
# its executables from the benchmark's persistent compilation cache.
#   throughput_ppo.json    benchmarks/throughput.py: our PPO vs Brax PPO on MJX ant
#                          (4096 envs, batch 2048, unroll 5, 32 minibatches, 4 epochs)
#   throughput_sac.json    our SAC vs Brax SAC on MJX ant (128 envs, batch 512, 8 updates/step)
#   overhead_diffppo.json  benchmarks/diffusion_overhead.py, diffppo:ppo with 1024 envs
#   sweep_scaling.json     benchmarks/sweep_scaling.py, diffppo, 1 4 16 64 seeds
#   parallel_tests.txt     tests/test_parallel.py's mesh checks on this JAX (4 CPU devices)
set -uo pipefail
OUT=${OUT:?set OUT to the folder for results}
QUICK=${QUICK:-0}
PART=${PART:-throughput}
case "$PART" in throughput|scaling|all) ;; *) echo "PART must be throughput, scaling or all, got $PART" >&2; exit 2;; esac
mkdir -p "$OUT"
if [ -d .whl ] && ! python3 -c "import brax, mujoco.mjx" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >/dev/null || exit 3
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
LOG=$OUT/device.txt
{ date -u; nvidia-smi -L 2>/dev/null || echo "no nvidia-smi";
  python3 -c "import jax; print('jax', jax.__version__, jax.devices())"; } > "$LOG" 2>&1

step() {  # step NAME SECONDS command...: runs it, appends its status and the end of its output
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "/tmp/device_check_$name.log" 2>&1
  local rc=$?
  { echo "== $name: exit $rc after $((SECONDS - t0)) s (limit $limit s)";
    grep -v "Failed to import\|cpu_aot_loader\|warnings.warn\|UserWarning" \
      "/tmp/device_check_$name.log" | tail -n 25; } >> "$LOG"
}

if [ "$QUICK" = 1 ]; then
  step throughput_ppo 600 python3 benchmarks/throughput.py --algos ppo --quick --out "$OUT/throughput_ppo.json"
  step throughput_sac 600 python3 benchmarks/throughput.py --algos sac --quick --out "$OUT/throughput_sac.json"
  step overhead_diffppo 300 python3 benchmarks/diffusion_overhead.py --pairs diffppo:ppo --quick \
    --env toy/bandit --out "$OUT/overhead_diffppo.json"
  step sweep_scaling 300 python3 benchmarks/sweep_scaling.py --quick --out "$OUT/sweep_scaling.json"
else
  if [ "$PART" != scaling ]; then
    step throughput_ppo 270 python3 benchmarks/throughput.py --algos ppo --gpu-scale --repeats 2 \
      --out "$OUT/throughput_ppo.json"
    step throughput_sac 290 python3 benchmarks/throughput.py --algos sac --gpu-scale --repeats 2 \
      --out "$OUT/throughput_sac.json"
  fi
  if [ "$PART" != throughput ]; then
    step overhead_diffppo 180 python3 benchmarks/diffusion_overhead.py --pairs diffppo:ppo \
      --num-envs 1024 --total-steps 500000 --repeats 2 --out "$OUT/overhead_diffppo.json"
    step sweep_scaling 200 python3 benchmarks/sweep_scaling.py --algos diffppo --seeds 1 4 16 64 \
      --total-steps 20000 --repeats 2 --isolate off --out "$OUT/sweep_scaling.json"
  fi
fi
if [ "$QUICK" = 1 ] || [ "$PART" != throughput ]; then
  step parallel_tests 60 python3 -m pytest -q -x -p no:cacheprovider tests/test_parallel.py \
    -k "not two_processes"
  cp "/tmp/device_check_parallel_tests.log" "$OUT/parallel_tests.txt" 2>/dev/null
fi
cat "$LOG"
