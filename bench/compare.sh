#!/usr/bin/env bash
# Training throughput of the same decoder LM in attnlab and in PyTorch CPU,
# side by side, plus attnlab's model FLOP/s against the machine's sgemm peak.
#   bench/compare.sh [build-dir] [extra args for both, e.g. --d-model 256]
# Needs python3-torch for the PyTorch column (Debian: apt-get install python3-torch).
# Never run by the tests.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
build="${1:-$here/../build}"
shift || true
py=/usr/bin/python3
have_torch=1
$py -c "import torch" 2>/dev/null || have_torch=0
threads="${THREADS:-2}"
printf "%-8s %-28s %14s %14s %8s %12s %10s\n" mixer config "attnlab tok/s" "torch tok/s" ratio "model GF/s" "of peak"
run() { # mixer, torch steps, args...
  local mixer=$1 tsteps=$2; shift 2
  local a t ratio="-" ttps="-"
  a=$("$build/bench/bench_train" --mixer "$mixer" --threads "$threads" "$@")
  local atps gf frac
  atps=$(sed -n 's/.*tokens_per_second=\([0-9.]*\).*/\1/p' <<<"$a")
  gf=$(sed -n 's/.*model_gflops=\([0-9.]*\).*/\1/p' <<<"$a")
  frac=$(sed -n 's/.*fraction_of_peak=\([0-9.]*\).*/\1/p' <<<"$a")
  if [ $have_torch = 1 ]; then
    t=$(OMP_NUM_THREADS=$threads $py "$here/torch_lm.py" --mixer "$mixer" --threads "$threads" --steps "$tsteps" "$@")
    ttps=$(sed -n 's/.*tokens_per_second=\([0-9.]*\).*/\1/p' <<<"$t")
    ratio=$(awk -v a="$atps" -v b="$ttps" 'BEGIN { printf "%.1fx", a / b }')
  fi
  printf "%-8s %-28s %14.0f %14s %8s %12s %10s\n" "$mixer" "${*:-default}" "$atps" "$ttps" "$ratio" "$gf" "$frac"
}
# The default LM: d 128, 4 layers, 4 heads, SwiGLU 512, vocab 256, T 256, batch 16.
run full 5 "$@"
run kda 2 "$@"
run gdn 2 "$@"
run mamba2 2 "$@"
# The synthetic-task models of experiments/kda_vs_full.yaml: d 64, 2 layers, no MLP, T 193.
small=(--d-model 64 --layers 2 --heads 2 --kv-heads 2 --mlp-hidden 0 --vocab 256 --seq-len 193 --batch 32)
run full 5 "${small[@]}"
run kda 2 "${small[@]}"
grep -m1 "^model name" /proc/cpuinfo | sed 's/^/# cpu: /'
echo "# threads: $threads; blis: $(sed -n 's/.*blis=\([a-z0-9]*\).*/\1/p' <<<"$("$build/bench/bench_train" --steps 1)")"
