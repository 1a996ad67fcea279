/* fuzz/fuzz_main.c: libFuzzer's entry for one harness; AT_FUZZ_ENTRY
 * (set by CMake) names it. */
#include "fuzz/targets.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return AT_FUZZ_ENTRY(data, size); }
