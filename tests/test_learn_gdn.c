/* gdn learns MQAR (see linlearn_testing.h). */
#include "linlearn_testing.h"

Test(learn_gdn, mqar) { expect_learns(AT_MIXER_GDN, 0.5); }
