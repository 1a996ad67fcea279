/* mamba2 learns MQAR (see linlearn_testing.h). */
#include "linlearn_testing.h"

Test(learn_mamba2, mqar) { expect_learns(MIXER(mamba2), 0.1); }
