/* fuzz/targets.h: the entry points of the fuzz harnesses.
 *
 * Each takes any bytes and must return 0 without crashing, hanging or
 * leaking; an input that breaks an invariant (something accepted that
 * should not be) aborts. libFuzzer calls them from fuzz/fuzz_main.c
 * (cmake -DAT_FUZZ=ON, bench/fuzz.sh); tests/test_fuzz_regressions.c feeds
 * them every file of tests/fuzz_regressions/<harness>/.
 *
 *   yaml        the bytes as an experiment file (loader + schema); what loads
 *               must give a resolved YAML that loads to the same run
 *   set         first byte: a base experiment file; the rest, split at
 *               newlines: --set arguments
 *   checkpoint  the bytes as a checkpoint of fuzz/seed.yaml's first run,
 *               loaded into its model and optimiser (as --resume does)
 *   results     the bytes as results.h5 (as --resume reads it); what reads
 *               must write and read back the same
 *   cache       the bytes as the token cache of a fixed small corpus
 *   bin         the bytes as a .bin token corpus (llm.c or nanoGPT layout)
 *
 * HDF5 inputs that start with attnlab's seal are resealed (length and
 * hash recomputed) unless byte 511 is non-zero, so that mutations reach
 * HDF5 and the readers instead of stopping at the checksum: a hostile
 * author can seal a file too. */
#ifndef AT_FUZZ_TARGETS_H
#define AT_FUZZ_TARGETS_H

#include <stddef.h>
#include <stdint.h>

int at_fuzz_yaml(const uint8_t *data, size_t size);
int at_fuzz_set(const uint8_t *data, size_t size);
int at_fuzz_checkpoint(const uint8_t *data, size_t size);
int at_fuzz_results(const uint8_t *data, size_t size);
int at_fuzz_cache(const uint8_t *data, size_t size);
int at_fuzz_bin(const uint8_t *data, size_t size);

#endif
