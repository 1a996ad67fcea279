/* Double gradient checks of the kda and mamba2 layers with each option that
 * changes the math (see test_linear_layers_d.c). */
#include "linlayer_gradcheck.h"

Test(linear_layers2_d, kda) {
  const lcase cases[] = {
    {"kda", 1, AT_GATE_SIGMOID, UNB, 0, CHUNK, 9},
    {"kda", 0, AT_GATE_SWISH, BND, 0, CHUNK, 11},
    {"kda", 1, AT_GATE_NONE, UNB, 1, CHUNK, 9},
    {"kda", 1, AT_GATE_SIGMOID, BND, 1, REC, 7},
  };
  for (int i = 0; i < AT_ARRAY_LEN(cases); i++) check_case(&cases[i], 300 + (uint64_t)i);
}

Test(linear_layers2_d, mamba2) {
  const lcase cases[] = {
    {"mamba2", 1, AT_GATE_SWISH, UNB, 0, CHUNK, 9},
    {"mamba2", 0, AT_GATE_NONE, UNB, 0, CHUNK, 10},
    {"mamba2", 1, AT_GATE_SIGMOID, UNB, 0, REC, 7},
  };
  for (int i = 0; i < AT_ARRAY_LEN(cases); i++) check_case(&cases[i], 400 + (uint64_t)i);
}
