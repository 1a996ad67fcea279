#!/usr/bin/env bash
# Training tokens/s of one run in one process (1 and 2 threads) and
# data-parallel over 2 MPI ranks of 1 thread (mpirun -np 2 ./train
# --data-parallel), and the gradient exchange alone (bench_allgather).
#
#   bench/mpi_scaling.sh [BUILD_DIR] [MIXER] [STEPS]
#
# The model: d 128, 4 layers of MIXER (default kda), SwiGLU, MQAR T 256, batch
# 32 (2 slices in every configuration, so the three train the same bits).
# Never run by the tests.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:-$here/../build}"
mixer="${2:-kda}"
steps="${3:-60}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/scale.yaml" <<YAML
experiment: mpi_scaling
seed: 0
data: {task: mqar, vocab_size: 512, seq_len: 256, num_kv_pairs: 32, train_examples: 4000, test_examples: 32}
model: {d_model: 128, n_heads: 4, mlp: swiglu, position: rope, layers: [$mixer, $mixer, $mixer, $mixer]}
train: {steps: $steps, batch_size: 32, micro_batches: 2, lr: 1.0e-3, eval_every: $steps, log_every: $steps}
runs: [{name: $mixer}]
YAML
root=""
[ "$(id -u)" -eq 0 ] && root="--allow-run-as-root"
export OMPI_MCA_btl_vader_single_copy_mechanism=none
tps() { sed -n 's/.* done: .* params, \([0-9]*\) tok\/s.*/\1/p' "$1"; }
echo "# $(grep -m1 '^model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) processors, load $(cut -d' ' -f1-3 /proc/loadavg)"
"$build/bin/train" "$tmp/scale.yaml" --set train.threads=1 --out "$tmp/t1" > "$tmp/t1.log"
"$build/bin/train" "$tmp/scale.yaml" --set train.threads=2 --out "$tmp/t2" > "$tmp/t2.log"
mpirun -np 2 $root "$build/bin/train" "$tmp/scale.yaml" --set train.threads=1 --data-parallel --out "$tmp/dp" > "$tmp/dp.log"
a=$(tps "$tmp/t1.log"); b=$(tps "$tmp/t2.log"); c=$(tps "$tmp/dp.log")
awk -v a="$a" -v b="$b" -v c="$c" 'BEGIN {
  printf "%-34s %10s %8s\n", "configuration", "tok/s", "vs 1"
  printf "%-34s %10d %8.2f\n", "1 process, 1 thread", a, 1
  printf "%-34s %10d %8.2f\n", "1 process, 2 threads", b, b / a
  printf "%-34s %10d %8.2f\n", "2 ranks data-parallel, 1 thread", c, c / a }'
mpirun -np 2 $root "$build/bench/bench_allgather" 20
