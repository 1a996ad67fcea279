/* gla learns MQAR (see linlearn_testing.h). GLA recalls less than the delta
 * rules at this size (d_model 32, one head, fla's expand_k 0.5: a 16 x 32
 * state), where the delta rules reach 0.9-0.99. Measured, 250 steps at lr
 * 1e-2, seeds 0-2, with BLIS's zen3 / haswell / skx kernels: median training
 * loss 3.20 / 3.06 / 3.15 (from 4.08; ln 32 = 3.47 is knowing only that the
 * answer is a value), median test accuracy 0.105 / 0.125 / 0.109 (chance
 * 1/32; single seeds 0.066-0.184). The bars, loss < 3.35 and accuracy >
 * 0.06, leave a margin no kernel set's rounding came near. */
#include "linlearn_testing.h"

Test(learn_gla, mqar) {
  if (AT_LEARN_SHORT) {
    expect_learns(MIXER(gla), 0);
    return;
  }
  expect_learns_at(MIXER(gla), 250, 1e-2, 3.35, 0.06);
}
