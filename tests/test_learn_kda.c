/* kda learns MQAR (see linlearn_testing.h). */
#include "linlearn_testing.h"

Test(learn_kda, mqar) { expect_learns(MIXER(kda), 0.5); }
