/* gla learns MQAR (see linlearn_testing.h). GLA recalls less than the delta
 * rules at this size (d_model 32, one head, fla's expand_k 0.5: a 16 x 32
 * state): measured test accuracy 0.148 (chance 1/32), training loss 4.09 ->
 * 3.0, where the delta rules reach 0.9-0.99; the bar is 2.5x chance and a
 * clear fall of the loss (ln 32 = 3.47 is knowing only that the answer is a
 * value). Median over seeds 0-2. */
#include "linlearn_testing.h"

Test(learn_gla, mqar) {
  if (AT_LEARN_SHORT) {
    expect_learns(MIXER(gla), 0);
    return;
  }
  expect_learns_at(MIXER(gla), 250, 1e-2, 3.3, 0.08);
}
