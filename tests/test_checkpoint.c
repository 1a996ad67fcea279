/* optim/checkpoint: bit-exact round trips (and bit-exact continued
 * training), clear refusals of missing, damaged and mismatched files that
 * leave memory untouched, and atomic writes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/h5io.h"
#include "optim/checkpoint.h"
#include "testing.h"

static char dir[256];

static void setup(void) {
  snprintf(dir, sizeof dir, "/tmp/attnlab_ck_%d", (int)getpid());
  mkdir(dir, 0700);
}

static void teardown(void) {
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  cr_assert(system(cmd) == 0);
}

TestSuite(checkpoint, .init = setup, .fini = teardown);

static void file_in_dir(char *buf, const char *name) { snprintf(buf, 300, "%s/%s", dir, name); }

/* Model variants: 0 the reference, 1 layers.1.attn.wq [4,8] instead of
 * [4,4], 2 without head.bias, 3 with an extra parameter, 4 the reference
 * in another order. */
static at_params *model(int variant, uint64_t seed) {
  at_params *p = at_params_new();
  cr_assert(p);
  int64_t wq1 = variant == 1 ? 8 : 4;
  if (variant == 4) cr_assert(at_params_add(p, "head.bias", AT_SHAPE(10), AT_PARAM_NO_DECAY, 0));
  cr_assert(at_params_add(p, "embed", AT_SHAPE(10, 4), AT_PARAM_NO_DECAY, 0));
  cr_assert(at_params_add(p, "layers.0.attn.wq", AT_SHAPE(4, 4), 0, 0));
  cr_assert(at_params_add(p, "layers.1.attn.wq", AT_SHAPE(4, wq1), 0, 1));
  cr_assert(at_params_add(p, "layers.1.norm.scale", AT_SHAPE(4), AT_PARAM_NO_DECAY, 1));
  if (variant != 2 && variant != 4) cr_assert(at_params_add(p, "head.bias", AT_SHAPE(10), AT_PARAM_NO_DECAY, 0));
  if (variant == 3) cr_assert(at_params_add(p, "extra", AT_SHAPE(3), 0, 0));
  cr_assert(at_params_finalize(p) == AT_OK);
  at_fill_normal(p->data, p->total, seed, 1, 0.0, 0.5);
  return p;
}

static void fake_grads(at_params *p, int step) {
  for (int64_t i = 0; i < p->total; i++) p->grad[i] = (real)sin(0.1 * (double)i + 0.77 * step);
}

static at_optim *optimizer(at_params *p, at_optimizer_kind kind) {
  at_optim_cfg c;
  at_optim_cfg_defaults(&c);
  c.kind = kind, c.lr = 0.01, c.weight_decay = 0.1, c.grad_clip = 1.0;
  c.schedule = AT_SCHED_COSINE, c.warmup_steps = 2, c.total_steps = 20;
  at_optim *o;
  cr_assert(at_optim_new(&c, p, &o) == AT_OK, "%s", at_errmsg());
  return o;
}

static void train(at_params *p, at_optim *o, int from, int steps) {
  for (int s = from; s < from + steps; s++) {
    fake_grads(p, s);
    cr_assert(at_optim_step(o, NULL) == AT_OK);
  }
}

static at_train_state some_state(void) {
  at_train_state s;
  at_train_state_init(&s);
  s.step = 7, s.skipped_steps = 2, s.tokens = 123456789012345;
  s.train_seconds = 1.0 / 3, s.wall_seconds = 2.0 / 7, s.best_metric = 0.987654321;
  s.n_rng = 3;
  s.rng[0] = 42, s.rng[1] = UINT64_MAX, s.rng[2] = 0x0123456789abcdefull;
  s.n_data_pos = 2;
  s.data_pos[0] = 5, s.data_pos[1] = 1ull << 63;
  return s;
}

static const char *yaml = "experiment: t\ntrain: {lr: 0.01, steps: 20}\nname: \"caf\xc3\xa9\"\n";

static void expect_same_state(const at_train_state *a, const at_train_state *b) {
  cr_expect(a->step == b->step && a->skipped_steps == b->skipped_steps && a->tokens == b->tokens);
  cr_expect(memcmp(&a->train_seconds, &b->train_seconds, sizeof(double)) == 0);
  cr_expect(memcmp(&a->wall_seconds, &b->wall_seconds, sizeof(double)) == 0);
  cr_expect(memcmp(&a->best_metric, &b->best_metric, sizeof(double)) == 0);
  cr_expect(a->n_rng == b->n_rng && memcmp(a->rng, b->rng, sizeof a->rng) == 0);
  cr_expect(a->n_data_pos == b->n_data_pos && memcmp(a->data_pos, b->data_pos, sizeof a->data_pos) == 0);
}

Test(checkpoint, round_trip_is_bit_exact_and_training_continues_identically) {
  for (int kind = 0; kind < 2; kind++) {
    char path[300];
    file_in_dir(path, "rt.h5");
    at_params *a = model(0, 1);
    at_optim *oa = optimizer(a, (at_optimizer_kind)kind);
    train(a, oa, 0, 5);
    at_train_state sa = some_state();
    cr_assert(at_checkpoint_save(path, a, oa, &sa, yaml) == AT_OK, "%s", at_errmsg());

    at_params *b = model(0, 2); /* other values */
    at_optim *ob = optimizer(b, (at_optimizer_kind)kind);
    train(b, ob, 0, 1);
    at_train_state sb;
    at_train_state_init(&sb);
    char *cfg = NULL;
    cr_assert(at_checkpoint_load(path, b, ob, &sb, &cfg) == AT_OK, "%s", at_errmsg());
    cr_expect(memcmp(a->data, b->data, (size_t)a->total * sizeof(real)) == 0, "parameters differ");
    cr_assert(at_optim_num_buffers(ob) == (kind == 0 ? 2 : 1));
    for (int i = 0; i < at_optim_num_buffers(oa); i++)
      cr_expect(memcmp(at_optim_buffer(oa, i), at_optim_buffer(ob, i), (size_t)a->total * sizeof(real)) == 0,
                "buffer %s differs", at_optim_buffer_name(oa, i));
    cr_expect(at_optim_steps_done(ob) == 5);
    expect_same_state(&sa, &sb);
    cr_assert(cfg);
    cr_expect_str_eq(cfg, yaml);
    free(cfg);
    /* resume: the same gradients give the same parameters, bit for bit */
    train(a, oa, 5, 4);
    train(b, ob, 5, 4);
    cr_expect(memcmp(a->data, b->data, (size_t)a->total * sizeof(real)) == 0, "training diverged after loading");
    at_optim_free(oa), at_optim_free(ob);
    at_params_free(a), at_params_free(b);
  }
}

Test(checkpoint, defaults_params_only_and_reordered_models) {
  char path[300];
  file_in_dir(path, "po.h5");
  at_params *a = model(0, 1);
  at_optim *oa = optimizer(a, AT_OPT_ADAMW);
  train(a, oa, 0, 2);
  cr_assert(at_checkpoint_save(path, a, oa, NULL, NULL) == AT_OK, "%s", at_errmsg());
  /* no optimiser, no state, no config wanted; parameters declared in another order */
  at_params *b = model(4, 3);
  cr_assert(at_checkpoint_load(path, b, NULL, NULL, NULL) == AT_OK, "%s", at_errmsg());
  for (int k = 0; k < a->n; k++) {
    at_param *x = &a->list[k], *y = at_params_find(b, x->name);
    cr_assert(y);
    cr_expect(memcmp(x->t->data, y->t->data, (size_t)x->t->size * sizeof(real)) == 0, "%s differs", x->name);
  }
  cr_expect(at_checkpoint_signature(a) != at_checkpoint_signature(b), "the signature ignores the order");
  /* the default state and an empty config come back as saved */
  at_train_state s = some_state();
  char *cfg = NULL;
  at_optim *ob = optimizer(b, AT_OPT_ADAMW);
  cr_assert(at_checkpoint_load(path, b, ob, &s, &cfg) == AT_OK, "%s", at_errmsg());
  cr_expect(s.step == 0 && s.n_rng == 0 && s.n_data_pos == 0 && isnan(s.best_metric));
  cr_expect(cfg && cfg[0] == '\0');
  free(cfg);
  at_optim_free(oa), at_optim_free(ob);
  at_params_free(a), at_params_free(b);
}

Test(checkpoint, frozen_status_is_not_saved) {
  char path[300];
  file_in_dir(path, "fz.h5");
  at_params *a = model(0, 1);
  at_params_set_trainable(a, 1, 0);
  cr_assert(at_checkpoint_save(path, a, NULL, NULL, NULL) == AT_OK);
  at_params *b = model(0, 2);
  at_params_set_trainable(b, 0, 0);
  cr_assert(at_checkpoint_load(path, b, NULL, NULL, NULL) == AT_OK, "%s", at_errmsg());
  cr_expect(at_params_find(b, "layers.1.attn.wq")->t->requires_grad == 1);
  cr_expect(at_params_find(b, "embed")->t->requires_grad == 0);
  cr_expect(memcmp(a->data, b->data, (size_t)a->total * sizeof(real)) == 0);
  at_params_free(a), at_params_free(b);
}

/* ---- refusals ------------------------------------------------------------------------ */

typedef struct snapshot {
  real *data, *buf[2];
  int64_t steps;
  at_train_state s;
} snapshot;

static snapshot take(const at_params *p, const at_optim *o, const at_train_state *s) {
  snapshot x = {0};
  size_t bytes = (size_t)p->total * sizeof(real);
  x.data = malloc(bytes);
  memcpy(x.data, p->data, bytes);
  for (int i = 0; i < at_optim_num_buffers(o); i++) {
    x.buf[i] = malloc(bytes);
    memcpy(x.buf[i], at_optim_buffer(o, i), bytes);
  }
  x.steps = at_optim_steps_done(o);
  x.s = *s;
  return x;
}

/* Loading `path` into the reference model with an AdamW optimiser fails
 * with `want` and a message containing `words`, and changes nothing. */
static void expect_refused(const char *path, at_status want, const char *words, int variant,
                           at_optimizer_kind kind) {
  at_params *p = model(variant, 9);
  at_optim *o = optimizer(p, kind);
  train(p, o, 0, 2);
  at_train_state s = some_state();
  snapshot before = take(p, o, &s);
  char *cfg = (char *)"untouched";
  at_status st = at_checkpoint_load(path, p, o, &s, &cfg);
  cr_expect(st == want, "%s: status %s, expected %s (%s)", path, at_status_name(st), at_status_name(want),
            at_errmsg());
  cr_expect(strstr(at_errmsg(), words) != NULL, "message '%s' lacks '%s'", at_errmsg(), words);
  cr_expect(strstr(at_errmsg(), path) != NULL, "message '%s' does not name the file", at_errmsg());
  size_t bytes = (size_t)p->total * sizeof(real);
  cr_expect(memcmp(before.data, p->data, bytes) == 0, "parameters changed by a refused load");
  for (int i = 0; i < at_optim_num_buffers(o); i++)
    cr_expect(memcmp(before.buf[i], at_optim_buffer(o, i), bytes) == 0, "optimiser state changed");
  cr_expect(before.steps == at_optim_steps_done(o));
  expect_same_state(&before.s, &s);
  cr_expect_str_eq(cfg, "untouched");
  free(before.data), free(before.buf[0]), free(before.buf[1]);
  at_optim_free(o);
  at_params_free(p);
}

static void save_reference(const char *path, int variant, at_optimizer_kind kind, int with_optim) {
  at_params *p = model(variant, 1);
  at_optim *o = optimizer(p, kind);
  train(p, o, 0, 3);
  at_train_state s = some_state();
  p->data[5] = (real)1234.5678; /* a value the corruption test can find */
  cr_assert(at_checkpoint_save(path, p, with_optim ? o : NULL, &s, yaml) == AT_OK, "%s", at_errmsg());
  at_optim_free(o);
  at_params_free(p);
}

static long file_size(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

static unsigned char *slurp(const char *path, long *n) {
  FILE *f = fopen(path, "rb");
  cr_assert(f);
  *n = file_size(path);
  unsigned char *b = malloc((size_t)*n);
  cr_assert(fread(b, 1, (size_t)*n, f) == (size_t)*n);
  fclose(f);
  return b;
}

static void spit(const char *path, const unsigned char *b, long n) {
  FILE *f = fopen(path, "wb");
  cr_assert(f);
  cr_assert(fwrite(b, 1, (size_t)n, f) == (size_t)n);
  fclose(f);
}

Test(checkpoint, missing_not_hdf5_and_not_a_checkpoint) {
  char path[300];
  file_in_dir(path, "missing.h5");
  expect_refused(path, AT_E_IO, "cannot open", 0, AT_OPT_ADAMW);
  file_in_dir(path, "text.h5");
  spit(path, (const unsigned char *)"hello\n", 6);
  expect_refused(path, AT_E_FORMAT, "not an HDF5 file", 0, AT_OPT_ADAMW);
  /* an HDF5 file that is something else */
  file_in_dir(path, "other.h5");
  at_h5 *h;
  cr_assert(at_h5_create(path, &h) == AT_OK);
  cr_assert(at_h5_write_real(h, "/params/embed", AT_SHAPE(2), (real[]){1, 2}) == AT_OK);
  cr_assert(at_h5_commit(h) == AT_OK);
  expect_refused(path, AT_E_FORMAT, "not an attnlab checkpoint", 0, AT_OPT_ADAMW);
  /* a checkpoint from the future */
  cr_assert(at_h5_create(path, &h) == AT_OK);
  cr_assert(at_h5_set_attr_str(h, "/", "format", AT_CHECKPOINT_FORMAT) == AT_OK);
  cr_assert(at_h5_set_attr_int(h, "/", "format_version", AT_CHECKPOINT_VERSION + 1) == AT_OK);
  cr_assert(at_h5_commit(h) == AT_OK);
  expect_refused(path, AT_E_FORMAT, "newer", 0, AT_OPT_ADAMW);
}

Test(checkpoint, truncated_and_corrupt_files) {
  char path[300], bad[300];
  file_in_dir(path, "good.h5");
  save_reference(path, 0, AT_OPT_ADAMW, 1);
  long n;
  unsigned char *b = slurp(path, &n);
  file_in_dir(bad, "bad.h5");
  /* truncated at several points */
  for (int k = 1; k < 4; k++) {
    spit(bad, b, n * k / 4);
    expect_refused(bad, AT_E_FORMAT, "", 0, AT_OPT_ADAMW);
  }
  /* one flipped bit inside a parameter's value: still a finite float, so
   * only the checksum can tell */
  float marker = 1234.5678f;
  long at = -1;
  for (long i = 0; i + 4 <= n && at < 0; i++)
    if (memcmp(b + i, &marker, 4) == 0) at = i;
  cr_assert(at >= 0, "the marker value is not in the file");
  b[at] ^= 1;
  spit(bad, b, n);
  expect_refused(bad, AT_E_FORMAT, "checksum mismatch", 0, AT_OPT_ADAMW);
  b[at] ^= 1;
  /* damaged superblock */
  for (int i = 0; i < 8; i++) b[i] ^= 0x5a;
  spit(bad, b, n);
  expect_refused(bad, AT_E_FORMAT, "", 0, AT_OPT_ADAMW);
  free(b);
  /* the good file still loads */
  at_params *p = model(0, 3);
  cr_expect(at_checkpoint_load(path, p, NULL, NULL, NULL) == AT_OK, "%s", at_errmsg());
  at_params_free(p);
}

Test(checkpoint, another_model_is_refused_naming_the_parameter) {
  char path[300], msg[600];
  file_in_dir(path, "ref.h5");
  save_reference(path, 0, AT_OPT_ADAMW, 1);
  snprintf(msg, sizeof msg, "checkpoint %s: parameter layers.1.attn.wq has shape [4,4], model has [4,8]", path);
  expect_refused(path, AT_E_SHAPE, msg, 1, AT_OPT_ADAMW);
  snprintf(msg, sizeof msg, "checkpoint %s: parameter extra (shape [3] in the model) is not in the checkpoint", path);
  expect_refused(path, AT_E_SHAPE, msg, 3, AT_OPT_ADAMW);
  snprintf(msg, sizeof msg, "checkpoint %s: parameter head.bias [10] is in the checkpoint but not in the model", path);
  expect_refused(path, AT_E_SHAPE, msg, 2, AT_OPT_ADAMW);
  /* the reverse: a checkpoint of the bigger model */
  save_reference(path, 1, AT_OPT_ADAMW, 1);
  snprintf(msg, sizeof msg, "parameter layers.1.attn.wq has shape [4,8], model has [4,4]");
  expect_refused(path, AT_E_SHAPE, msg, 0, AT_OPT_ADAMW);
  at_params *a = model(0, 1), *b = model(0, 2), *c = model(1, 1);
  cr_expect(at_checkpoint_signature(a) == at_checkpoint_signature(b));
  cr_expect(at_checkpoint_signature(a) != at_checkpoint_signature(c));
  at_params_free(a), at_params_free(b), at_params_free(c);
}

Test(checkpoint, another_optimiser_is_refused) {
  char path[300];
  file_in_dir(path, "opt.h5");
  save_reference(path, 0, AT_OPT_SGD, 1);
  expect_refused(path, AT_E_STATE, "holds sgd state, the optimiser is adamw", 0, AT_OPT_ADAMW);
  save_reference(path, 0, AT_OPT_ADAMW, 0);
  expect_refused(path, AT_E_STATE, "no optimiser state", 0, AT_OPT_ADAMW);
  /* SGD without momentum has no buffer */
  at_params *p = model(0, 1);
  at_optim_cfg c;
  at_optim_cfg_defaults(&c);
  c.kind = AT_OPT_SGD, c.momentum = 0;
  at_optim *o;
  cr_assert(at_optim_new(&c, p, &o) == AT_OK);
  cr_assert(at_checkpoint_save(path, p, o, NULL, NULL) == AT_OK);
  expect_refused(path, AT_E_STATE, "buffers [], the optimiser has [momentum]", 0, AT_OPT_SGD);
  at_optim_free(o);
  at_params_free(p);
}

/* ---- atomic writes ------------------------------------------------------------------------ */

Test(checkpoint, failed_save_keeps_the_old_checkpoint) {
  char path[300], tmp[320];
  file_in_dir(path, "atomic.h5");
  at_h5_tmp_name(path, tmp, sizeof tmp);
  save_reference(path, 0, AT_OPT_ADAMW, 1);
  cr_expect(access(tmp, F_OK) != 0, "a .tmp file was left behind");
  long n0;
  unsigned char *old = slurp(path, &n0);
  /* the temporary file cannot be created: the save fails, the old file stays */
  cr_assert(mkdir(tmp, 0700) == 0);
  at_params *p = model(0, 5);
  at_status st = at_checkpoint_save(path, p, NULL, NULL, "new");
  cr_expect(st == AT_E_IO, "status %s", at_status_name(st));
  cr_expect(strstr(at_errmsg(), path) != NULL, "%s", at_errmsg());
  long n1;
  unsigned char *now = slurp(path, &n1);
  cr_expect(n0 == n1 && memcmp(old, now, (size_t)n0) == 0, "the old checkpoint was modified");
  rmdir(tmp);
  /* a good save replaces it and leaves no temporary file */
  cr_assert(at_checkpoint_save(path, p, NULL, NULL, "new") == AT_OK, "%s", at_errmsg());
  cr_expect(access(tmp, F_OK) != 0);
  char *cfg;
  at_params *q = model(0, 6);
  cr_assert(at_checkpoint_load(path, q, NULL, NULL, &cfg) == AT_OK);
  cr_expect_str_eq(cfg, "new");
  cr_expect(memcmp(p->data, q->data, (size_t)p->total * sizeof(real)) == 0);
  free(cfg), free(old), free(now);
  at_params_free(p), at_params_free(q);
  /* no directory */
  char nodir[300];
  file_in_dir(nodir, "no/such/dir.h5");
  p = model(0, 1);
  cr_expect(at_checkpoint_save(nodir, p, NULL, NULL, NULL) == AT_E_IO);
  cr_expect(strstr(at_errmsg(), "no/such/dir.h5") != NULL, "%s", at_errmsg());
  at_params_free(p);
}

Test(checkpoint, bad_arguments) {
  char path[300];
  file_in_dir(path, "args.h5");
  at_params *p = model(0, 1), *other = model(0, 1);
  at_optim *o = optimizer(other, AT_OPT_ADAMW);
  cr_expect(at_checkpoint_save(path, p, o, NULL, NULL) == AT_E_ARG);
  cr_expect(strstr(at_errmsg(), "another parameter store") != NULL, "%s", at_errmsg());
  at_train_state s;
  at_train_state_init(&s);
  s.n_rng = AT_STATE_MAX_WORDS + 1;
  cr_expect(at_checkpoint_save(path, p, NULL, &s, NULL) == AT_E_ARG);
  cr_expect(access(path, F_OK) != 0);
  at_params *u = at_params_new();
  cr_assert(at_params_add(u, "a/b", AT_SHAPE(2), 0, 0));
  cr_assert(at_params_finalize(u) == AT_OK);
  cr_expect(at_checkpoint_save(path, u, NULL, NULL, NULL) == AT_E_ARG);
  cr_expect(strstr(at_errmsg(), "a/b") != NULL, "%s", at_errmsg());
  at_optim_free(o);
  at_params_free(p), at_params_free(other), at_params_free(u);
}
