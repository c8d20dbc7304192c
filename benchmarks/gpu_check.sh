#!/usr/bin/env bash
# The prepared check for a lent GPU machine, as one call of about 8 minutes: the tests that need
# CUDA, then benchmarks/perch_gpu.py (model only in bf16, torch.compile, end to end from FLAC with
# and without the workers' page-locked ring). From the repository root:
#     OUT=/some/folder bash benchmarks/gpu_check.sh
# Results: $OUT/machine.txt, $OUT/tests.txt, $OUT/bench.txt (the summary table is at its end) and
# $OUT/gpu.json. TESTS_S and BENCH_S cap each part in seconds; BENCH_ARGS replaces the benchmark's
# options (a dry run on a CPU: BENCH_ARGS="--quick --workers 2").
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export OMP_WAIT_POLICY=PASSIVE PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
    nvidia-smi
    nproc
    free -g
    df -h /dev/shm
    python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} >"$OUT/machine.txt" 2>&1
CUDA_TESTS=(
    tests/test_embedder_ring.py
    tests/test_embedder_batching.py
    tests/test_embedder_runtime.py
    "tests/test_embedder_perch.py::test_gpu_matches_cpu"
    "tests/test_embedder_animal2vec.py::test_gpu_matches_cpu"
)
timeout "${TESTS_S:-180}" python -m pytest -q -p no:cacheprovider -W ignore -rs "${CUDA_TESTS[@]}" \
    >"$OUT/tests.txt" 2>&1
echo "tests exit $?" >>"$OUT/tests.txt"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of options
timeout "${BENCH_S:-420}" python benchmarks/perch_gpu.py ${BENCH_ARGS:---compile --precisions bf16 --batches 256,512} \
    --out "$OUT/gpu.json" >"$OUT/bench.txt" 2>&1
echo "bench exit $?" >>"$OUT/bench.txt"
tail -40 "$OUT/bench.txt"
