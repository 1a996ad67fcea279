/* gdn learns MQAR (see linlearn_testing.h). */
#include "linlearn_testing.h"

Test(learn_gdn, mqar) { expect_learns(MIXER(gdn), 0.5); }
