#!/usr/bin/env bash
# bench/fuzz.sh SECONDS [HARNESS...]
#
# Builds the libFuzzer harnesses (build-fuzz/: clang, ASan + UBSan, -DAT_FUZZ=ON),
# makes their seed corpora from the repository's own files and from a short
# training of fuzz/seed.yaml (checkpoints, results, a token cache), and runs
# each harness for SECONDS (default harnesses: yaml set checkpoint results
# cache bin), at nice 19, FUZZ_JOBS at a time (default 1; the machine is
# shared). Corpora grow in build-fuzz/corpus/<harness>/ across runs; crashes
# go to build-fuzz/artifacts/<harness>/ (add each, once fixed, to
# tests/fuzz_regressions/<harness>/). Prints executions, coverage (cov, ft)
# and CPU seconds per harness; logs in build-fuzz/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
src="$PWD"
secs="${1:?usage: bench/fuzz.sh SECONDS [HARNESS...]}"
shift
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(yaml set checkpoint results cache bin)
jobs="${FUZZ_JOBS:-1}"
b="$src/build-fuzz"

CC=clang cmake -S . -B "$b" -DCMAKE_BUILD_TYPE=Debug -DAT_FUZZ=ON -DAT_BUILD_TESTS=OFF >/dev/null
targets=(train)
for h in "${harnesses[@]}"; do targets+=("fuzz_$h"); done
cmake --build "$b" -j2 --target "${targets[@]}"

export ASAN_OPTIONS="allocator_may_return_null=1:detect_leaks=1"
export LSAN_OPTIONS="suppressions=$src/tests/lsan.supp"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

# ---- seeds -------------------------------------------------------------------
seeds="$b/seeds"
if [ ! -d "$seeds" ]; then
  mkdir -p "$seeds"/{yaml,set,checkpoint,results,cache,bin}
  cp experiments/*.yaml tests/configs/*.yaml fuzz/seed.yaml "$seeds/yaml/"
  # set: a base file index byte, then --set arguments, one per line
  printf '\000train.steps=100\nlr=3e-3' >"$seeds/set/steps_lr"
  printf '\001sweep.lr=[1e-3,3e-3]\nmodel.layers=[kda,full]' >"$seeds/set/sweep_layers"
  printf '\002sweep.data=[{task: mqar, query_layout: contiguous, vocab_size: 256, seq_len: 193, num_kv_pairs: 64}]' \
    >"$seeds/set/sweep_data"
  printf '\003model.attention.full.window=16\ntrain.stages=[{name: a, steps: 2000}]' >"$seeds/set/attention"
  printf '\004sweep={lr: [1e-3], seed: [0, 1]}\nseed=7\nmodel.d_model=32' >"$seeds/set/sweep_map"
  # checkpoints and results of a short training (full stop, interrupted, resumed)
  out="$b/seed_run"
  rm -rf "$out"
  "$b/bin/train" fuzz/seed.yaml --out "$out/a" >/dev/null
  "$b/bin/train" fuzz/seed.yaml --out "$out/b" --stop-after 3 >/dev/null
  cp "$out/a/checkpoints/full.h5" "$seeds/checkpoint/full_final.h5"
  cp "$out/b/checkpoints/full.h5" "$seeds/checkpoint/full_step3.h5"
  cp "$out/a/checkpoints/niah.h5" "$seeds/checkpoint/other_model.h5"
  cp "$out/a/results.h5" "$seeds/results/done.h5"
  cp "$out/b/results.h5" "$seeds/results/interrupted.h5"
  for f in tests/golden/*.h5; do # foreign (h5py, unsealed) HDF5 files
    [ "$(stat -c %s "$f")" -le 262144 ] && cp "$f" "$seeds/checkpoint/" && cp "$f" "$seeds/results/" && cp "$f" "$seeds/cache/"
  done
  # a token cache of the cache harness's corpus (made by its first run)
  printf '' >"$b/empty_input"
  "$b/fuzz/fuzz_cache" "$b/empty_input" >/dev/null 2>&1 || true
  cat >"$b/cache_seed.yaml" <<EOF
experiment: cache_seed
data: {task: text, path: /tmp/attnlab_fuzz_corpus, cache: $seeds/cache/cache.h5, seq_len: 8, val_fraction: 0.25,
       train_examples: 16}
model: {d_model: 8, n_heads: 1, mlp: none, layers: [full]}
train: {steps: 1, batch_size: 1, threads: 1}
EOF
  "$b/bin/train" "$b/cache_seed.yaml" --out "$out/cache" >/dev/null
  cp "$out/a/results.h5" "$out/a/checkpoints/full.h5" "$seeds/cache/"
  cp tests/fuzz_regressions/bin/* "$seeds/bin/"
  for h in yaml set checkpoint results cache bin; do cp tests/fuzz_regressions/$h/* "$seeds/$h/" 2>/dev/null || true; done
fi

# ---- runs ----------------------------------------------------------------------
# Every harness runs in libFuzzer's fork mode, which records a crash, a
# timeout or an exhausted memory limit and goes on, so a long run is not
# ended by its first finding; the triage below reruns each finding alone.
# (libFuzzer's timeout is wall-clock time: at nice 19 on a busy machine an
# input that takes 0.5 s alone can exceed it, and would otherwise end the
# run.) The HDF5 harnesses run with the guard off (AT_H5_GUARD=0: no fork
# per input, readers at full speed): libhdf5 itself crashes on some inputs
# (in ./train the guard turns those into refusals; tests/fuzz_regressions
# keeps them). Leaks of memory allocated inside libhdf5 (on its error paths)
# are not reported; leaks of our own allocations are.
mkdir -p "$b/logs"
printf 'leak:libhdf5_serial.so\n' | cat tests/lsan.supp - >"$b/lsan_hdf5.supp"
run() {
  local h="$1" mode=(-fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1) env=()
  mkdir -p "$b/corpus/$h" "$b/artifacts/$h"
  case "$h" in
    checkpoint | results | cache) env=(AT_H5_GUARD=0 LSAN_OPTIONS="suppressions=$b/lsan_hdf5.supp") ;;
  esac
  env "${env[@]}" /usr/bin/time -f "%U %S" -o "$b/logs/$h.time" \
    nice -n 19 "$b/fuzz/fuzz_$h" -max_total_time="$secs" -max_len=1048576 -timeout=30 -rss_limit_mb=2560 \
      "${mode[@]}" -print_final_stats=1 -artifact_prefix="$b/artifacts/$h/" "$b/corpus/$h" "$seeds/$h" \
      >"$b/logs/$h.log" 2>&1 || true
}
running=0
for h in "${harnesses[@]}"; do
  run "$h" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
done
wait

# ---- summary ---------------------------------------------------------------------
printf '%-11s %12s %8s %8s %9s %8s  %s\n' harness executions cov ft cpu_s corpus artifacts
for h in "${harnesses[@]}"; do
  log="$b/logs/$h.log"
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}' | tail -1 || true)
  line=$(grep -E '^#[0-9]+' "$log" | grep -E 'cov: ' | tail -1 || true)
  [ -n "$execs" ] || execs=$(echo "$line" | grep -oE '^#[0-9]+' | tr -d '#' || true) # fork mode
  cov=$(echo "$line" | grep -o 'cov: [0-9]*' | awk '{print $2}' || true)
  ft=$(echo "$line" | grep -o 'ft: [0-9]*' | awk '{print $2}' || true)
  cpu=$(tail -1 "$b/logs/$h.time" 2>/dev/null | awk '{printf "%.0f", $1 + $2}' || echo "?")
  printf '%-11s %12s %8s %8s %9s %8s  %s\n' "$h" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$cpu" \
    "$(ls "$b/corpus/$h" | wc -l)" "$(ls "$b/artifacts/$h" | wc -l)"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$h" "${execs:-0}" "${cov:-0}" "${ft:-0}" "$cpu" \
    >>"$b/logs/history.tsv"
done
# every run so far, summed per harness (the corpora carry over between runs)
awk -F'\t' '{e[$2]+=$3; c[$2]+=$6; if ($4 > v[$2]) v[$2]=$4; if ($5 > f[$2]) f[$2]=$5}
  END {print "all runs:"; for (h in e) printf "%-11s %12d execs, max cov %d, max ft %d, %d cpu s\n", h, e[h], v[h], f[h], c[h]}' \
  "$b/logs/history.tsv"

# ---- triage: where each artifact fails (first frames outside the sanitizer runtime) ----
for h in "${harnesses[@]}"; do
  for f in "$b/artifacts/$h"/*; do
    [ -e "$f" ] || continue
    where=$(AT_H5_GUARD=0 ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=0 timeout 120 "$b/fuzz/fuzz_$h" "$f" 2>&1 |
      grep -E '^ +#[0-9]+ ' | grep -vE 'interceptor|sanitizer|libc\.so|fuzzer::|/libc/|string/' | head -3 |
      sed -E 's/.* in ([^ ]+).*/\1/; s/.*\((.*\.so)[^)]*\).*/\1/' | tr '\n' ' ' || true)
    case "$where" in
      *libhdf5*) kind=libhdf5 ;;
      "") kind="no crash (timeout or leak?)" ;;
      *) kind=attnlab ;;
    esac
    printf '%-11s %-26s %s  %s\n' "$h" "$kind" "$where" "$(basename "$f")"
  done
done | sort | tee "$b/logs/triage.txt"
