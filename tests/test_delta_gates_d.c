/* ops/attention/delta.c: double gradient checks of delta_rule,
 * gated_delta_rule and kda with strong decays (gates around -20 mixed with
 * gates near 0), and of the output alone with a custom scale. */
#include "lin_gradcheck.h"

Test(delta_gates_gradcheck, gdn_strong_decay) { check_strong_decay(AT_LIN_GATED_DELTA_RULE); }
Test(delta_gates_gradcheck, kda_strong_decay) { check_strong_decay(AT_LIN_KDA); }
Test(delta_gates_gradcheck, output_only_and_scale) {
  check_output_only(AT_LIN_DELTA_RULE);
  check_output_only(AT_LIN_GATED_DELTA_RULE);
  check_output_only(AT_LIN_KDA);
}
