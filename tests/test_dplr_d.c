/* ops/attention/dplr.c (+ gla.c): double gradient checks of gla and dplr in
 * the recurrent and the chunkwise form (chunk sizes 1, 4, 5, 64 with ragged
 * tails), with and without an initial state; the checked output packs o and
 * the final state together. */
#include "dplr_gradcheck.h"

Test(dplr_gradcheck, gla) { dp_check_forms(0); }
Test(dplr_gradcheck, dplr) { dp_check_forms(1); }
