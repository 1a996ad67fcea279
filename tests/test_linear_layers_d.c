/* Double gradient checks of the deltanet and gdn layers with each option
 * that changes the math (short conv on/off, output gate sigmoid / swish /
 * none, bounded decay gate, negative eigenvalues, chunk and recurrent
 * forms). kda and mamba2: test_linear_layers2_d.c. */
#include "linlayer_gradcheck.h"

Test(linear_layers_d, deltanet) {
  const lcase cases[] = {
    {"deltanet", 1, AT_GATE_NONE, UNB, 0, CHUNK, 9},
    {"deltanet", 0, AT_GATE_SIGMOID, UNB, 1, CHUNK, 9},
    {"deltanet", 1, AT_GATE_SWISH, UNB, 0, REC, 7},
  };
  for (int i = 0; i < AT_ARRAY_LEN(cases); i++) check_case(&cases[i], 100 + (uint64_t)i);
}

Test(linear_layers_d, gdn) {
  const lcase cases[] = {
    {"gdn", 1, AT_GATE_SWISH, UNB, 0, CHUNK, 9},
    {"gdn", 0, AT_GATE_SIGMOID, BND, 1, CHUNK, 10},
    {"gdn", 1, AT_GATE_NONE, BND, 0, REC, 7},
  };
  for (int i = 0; i < AT_ARRAY_LEN(cases); i++) check_case(&cases[i], 200 + (uint64_t)i);
}
