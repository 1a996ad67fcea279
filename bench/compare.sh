#!/usr/bin/env bash
# Training throughput of the same decoder LM in attnlab and in PyTorch CPU,
# side by side, with attnlab's model FLOP/s against the sgemm peak that the
# same program measures; one block per build (vector ISA), in one run.
#
#   bench/compare.sh [--builds "DIR[:BLIS] ..."] [--mixers "full kda ..."] [--reps N]
#                    [--small] [-- extra args for both programs, e.g. --d-model 256]
#
#   --builds  build directories, each optionally with the BLIS kernel set to
#             run it with (skx, haswell, zen3, ...; default: attnlab's choice).
#             E.g. --builds "build build-hsw:haswell" compares an AVX-512
#             build with a -DAT_MARCH=haswell build on BLIS's AVX2 kernels,
#             which is how an AVX2 machine is measured on an AVX-512 one.
#   --mixers  default "full kda gdn mamba2"
#   --small   also the synthetic-task models of experiments/kda_vs_full.yaml
#             (d 64, 2 layers, no MLP, T 193, batch 32)
#   --reps    runs per point (default 3): the table shows the best and the
#             range; the ratio is best against best; the sgemm peak is the
#             highest that any of the runs measured (on a noisy machine the
#             best run's own peak can be low, which would flatter "of peak").
# THREADS (default 2) threads for both. PyTorch gets the same threads and the
# same BLIS kernel set (Debian's torch calls BLIS through libblas.so.3), and
# with an AVX2 build also ATEN_CPU_CAPABILITY=avx2, ONEDNN_MAX_CPU_ISA=AVX2.
# Needs python3-torch for the PyTorch column. Never run by the tests.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
builds="$here/../build"
mixers="full kda gdn mamba2"
reps=3
small=0
while [ $# -gt 0 ]; do
  case "$1" in
    --builds) builds="$2"; shift 2 ;;
    --mixers) mixers="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    --small) small=1; shift ;;
    --) shift; break ;;
    *) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
py=/usr/bin/python3
have_torch=1
$py -c "import torch" 2>/dev/null || have_torch=0
threads="${THREADS:-2}"

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
blis_number() { # BLIS 0.9's arch_t numbers (BLIS itself reads only numbers)
  case "$1" in
    skx) echo 0 ;; knl) echo 1 ;; haswell) echo 3 ;; sandybridge) echo 4 ;; penryn) echo 5 ;;
    zen3) echo 6 ;; zen2) echo 7 ;; zen) echo 8 ;; excavator) echo 9 ;; generic) echo 25 ;;
    *) echo "" ;;
  esac
}

echo "# $(grep -m1 '^model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) processors; threads $threads; load $(cut -d' ' -f1-3 /proc/loadavg)"
printf "%-9s %-10s %-8s %-7s %-13s %20s %20s %7s %9s %9s %7s\n" isa march blis mixer config "attnlab tok/s" \
  "torch tok/s" ratio "model GF/s" "peak GF/s" "of peak"

point() { # dir blis mixer torch_steps label args...
  local dir=$1 blis=$2 mixer=$3 tsteps=$4 label=$5; shift 5
  local -a env_a=() env_t
  [ -n "$blis" ] && env_a=("BLIS_ARCH_TYPE=$blis")
  local best=0 worst=1e30 bline="" tbest=0 tworst=1e30 out tps peak=0
  for ((r = 0; r < reps; r++)); do
    out=$(env "${env_a[@]}" "$dir/bench/bench_train" --mixer "$mixer" --threads "$threads" "$@")
    tps=$(field tokens_per_second "$out")
    if awk -v a="$tps" -v b="$best" 'BEGIN { exit !(a > b) }'; then best=$tps; bline=$out; fi
    worst=$(awk -v a="$tps" -v b="$worst" 'BEGIN { print (a < b ? a : b) }')
    peak=$(awk -v a="$(field sgemm_peak_gflops "$out")" -v b="$peak" 'BEGIN { print (a > b ? a : b) }')
    if [ $have_torch = 1 ]; then
      env_t=("OMP_NUM_THREADS=$threads" "BLIS_ARCH_TYPE=$(blis_number "$(field blis "$out")")")
      [ "$(field isa "$out")" = "AVX2+FMA" ] && env_t+=("ATEN_CPU_CAPABILITY=avx2" "ONEDNN_MAX_CPU_ISA=AVX2")
      out=$(env "${env_t[@]}" $py "$here/torch_lm.py" --mixer "$mixer" --threads "$threads" --steps "$tsteps" "$@")
      tps=$(field tokens_per_second "$out")
      tbest=$(awk -v a="$tps" -v b="$tbest" 'BEGIN { print (a > b ? a : b) }')
      tworst=$(awk -v a="$tps" -v b="$tworst" 'BEGIN { print (a < b ? a : b) }')
    fi
  done
  local ratio="-" tcol="-"
  if [ $have_torch = 1 ]; then
    ratio=$(awk -v a="$best" -v b="$tbest" 'BEGIN { printf "%.1fx", a / b }')
    tcol=$(awk -v a="$tbest" -v b="$tworst" 'BEGIN { printf "%.0f (%.0f)", a, b }')
  fi
  printf "%-9s %-10s %-8s %-7s %-13s %20s %20s %7s %9s %9s %6.0f%%\n" "$(field isa "$bline")" \
    "$(field march "$bline")" "$(field blis "$bline")" "$mixer" "$label" \
    "$(awk -v a="$best" -v b="$worst" 'BEGIN { printf "%.0f (%.0f)", a, b }')" "$tcol" "$ratio" \
    "$(field model_gflops "$bline")" "$peak" \
    "$(awk -v m="$(field model_gflops "$bline")" -v p="$peak" 'BEGIN { print 100 * m / p }')"
}

for entry in $builds; do
  dir=${entry%%:*}
  blis=""
  [ "$entry" != "$dir" ] && blis=${entry#*:}
  for mixer in $mixers; do
    tsteps=2
    [ "$mixer" = full ] && tsteps=5
    # The default LM: d 128, 4 layers, 4 heads, SwiGLU 512, vocab 256, T 256, batch 16.
    point "$dir" "$blis" "$mixer" $tsteps "${*:-d128 T256}" "$@"
    if [ $small = 1 ]; then
      point "$dir" "$blis" "$mixer" $tsteps "d64 T193" --d-model 64 --layers 2 --heads 2 \
        --kv-heads 2 --mlp-hidden 0 --vocab 256 --seq-len 193 --batch 32 "$@"
    fi
  done
done
echo "# (best of $reps runs, worst in brackets); load at the end $(cut -d' ' -f1-3 /proc/loadavg)"
