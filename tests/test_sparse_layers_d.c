/* The fixed-pattern sparse mixers in double: central-difference gradient
 * checks of every parameter and the input for every configuration of
 * sparse_testing.h (the registry suite checks one per mixer), at T 37 with
 * GQA and RoPE. */
#include "sparse_testing.h"

enum { D = 16, HQ = 4, H = 2, HD = 4, B = 1, T = 37 };

static at_tensor *gc_fn(at_ctx *c, at_tensor **in, void *u) {
  sp_layer *L = u;
  at_mixer_io io = {0};
  return L->impl->forward(c, L->state, in[L->p->n], &io);
}

Test(sparse_layers_d, gradcheck_every_parameter_and_the_input) {
  for (size_t k = 0; k < AT_ARRAY_LEN(sp_cases); k++) {
    at_ctx *c = at_ctx_new(0);
    at_model_cfg cfg = sp_cfg(&sp_cases[k], D, HQ, H, HD);
    sp_layer L = sp_layer_new(&cfg, sp_cases[k].layer_index, 3);
    sp_randomize(L.p, 3 + k, 0.4);
    at_tensor **in = calloc((size_t)L.p->n + 1, sizeof *in);
    for (int i = 0; i < L.p->n; i++) in[i] = L.p->list[i].t;
    in[L.p->n] = AT_RANDN(c, 4 + k, 1.0, B, T, D);
    AT_GRADCHECK(c, gc_fn, in, L.p->n + 1, &L, sp_cases[k].name);
    free(in);
    sp_layer_free(&L);
    at_ctx_free(c);
  }
}
