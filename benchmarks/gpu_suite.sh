#!/usr/bin/env bash
# The GPU figures of benchmarks/README.md in one go: data path, trainer overhead, the GPU settings
# (fp32 / bf16 / channels-last / torch.compile), DDP (NCCL on the GPU, Gloo on the CPU cores) and
# the quantum head (the torch executor at 8-20 qubits, the noisy simulation of a device snapshot).
# Run from the repository root with the project importable (an installed venv, or
# PYTHONPATH=src); each step is capped so that one failure cannot eat the others' time.
#
#   bash benchmarks/gpu_suite.sh [output folder]
set -u
out="${1:-benchmark-results}"
mkdir -p "$out"
py="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1 KEDRO_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 WANDB_MODE=offline

step() {  # step NAME SECONDS ARGS...
  local name="$1" limit="$2"
  shift 2
  echo "=== $name: $*"
  timeout "$limit" "$py" "$@" 2>"$out/$name.err" | tee "$out/$name.txt"
  echo "=== $name exit ${PIPESTATUS[0]}"
  tail -n 3 "$out/$name.err"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
step data_path 90 benchmarks/data_path.py --device cuda --images 8192 --size 224 --batch 256
step trainer_overhead 90 benchmarks/trainer_overhead.py --device cuda --images 4096 --size 128 --batch 128 --repeats 3
step gpu_settings 200 benchmarks/gpu_settings.py --device cuda --encoder resnet50 --size 224 --images 4096 --batch 128
step ddp_cuda 80 benchmarks/ddp.py --device cuda --nproc 1 --encoder resnet18 --size 128 --images 8192 --batch 256 --workers auto
step ddp_cpu 80 benchmarks/ddp.py --device cpu --nproc 1 2 4 --images 2048 --size 64 --batch 64
# The quantum head: the torch executor from 8 to 20 qubits on the GPU, and the noisy simulation of
# a 4-qubit head under a 133-qubit snapshot (qiskit-aer on the machine's CPU cores: the aer GPU
# build is a separate package, qiskit-aer-gpu, that this suite does not install).
step quantum_executor 100 benchmarks/quantum_executor_scaling.py --device cuda --qubits 8 12 16 20 --min-seconds 1
step quantum_hardware 60 benchmarks/quantum_hardware.py --device fake_torino --shots 1024 --images 1000 --repeats 2
