/* ops/attention/simple_gla.c: double gradient checks of simple GLA in the
 * recurrent and the chunkwise form (chunk sizes 1, 4, 5, 64 with ragged
 * tails), with and without an initial state (o and the final state packed
 * together), with strong decays, and of the output alone with a custom
 * scale. */
#include "lin_gradcheck.h"

Test(simple_gla_gradcheck, forms) { check_kind(AT_LIN_SIMPLE_GLA); }
Test(simple_gla_gradcheck, strong_decay) { check_strong_decay(AT_LIN_SIMPLE_GLA); }
Test(simple_gla_gradcheck, output_only_and_scale) { check_output_only(AT_LIN_SIMPLE_GLA); }
