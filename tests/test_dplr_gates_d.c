/* ops/attention/dplr.c (+ gla.c): double gradient checks of gla and dplr
 * with strong decays (around -20 per token mixed with decays near 0), and
 * of the output alone with a custom scale. */
#include "dplr_gradcheck.h"

Test(dplr_gates_gradcheck, gla_strong_decay) { dp_check_strong_decay(0); }
Test(dplr_gates_gradcheck, dplr_strong_decay) { dp_check_strong_decay(1); }
Test(dplr_gates_gradcheck, output_only_and_scale) {
  dp_check_output_only(0);
  dp_check_output_only(1);
}
