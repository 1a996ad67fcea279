/* deltanet learns MQAR (see linlearn_testing.h). */
#include "linlearn_testing.h"

Test(learn_deltanet, mqar) { expect_learns(MIXER(deltanet), 0.5); }
