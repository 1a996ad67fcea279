/* rwkv7 learns MQAR (see linlearn_testing.h). */
#include "linlearn_testing.h"

Test(learn_rwkv7, mqar) { expect_learns(MIXER(rwkv7), 0.5); }
