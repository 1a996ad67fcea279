/* ops/attention/delta.c: double gradient checks of delta_rule,
 * gated_delta_rule and kda in the recurrent and the chunkwise form (chunk
 * sizes 1, 4, 5, 64 with ragged tails), with and without an initial state;
 * the checked output packs o and the final state together. */
#include "lin_gradcheck.h"

Test(delta_gradcheck, delta_rule) { check_kind(AT_LIN_DELTA_RULE); }
Test(delta_gradcheck, gated_delta_rule) { check_kind(AT_LIN_GATED_DELTA_RULE); }
Test(delta_gradcheck, kda) { check_kind(AT_LIN_KDA); }
