/* models/mixers.c: the registry of mixers. A mixer is registered by one line
 * below (its at_mixer_impl is defined in its model file); its id is its
 * index here, so keep the order stable (checkpoints name parameters, not
 * ids, but experiment tables list mixers in this order). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "models/mixer.h"

#define MIXERS(X)                                  \
  X(full)     /* models/full.c */                  \
  X(deltanet) /* models/delta_layers.c */          \
  X(gdn)                                           \
  X(kda)                                           \
  X(mamba2)   /* models/mamba2.c */                \
  X(mla)      /* models/mla.c */                   \
  X(dsa)      /* models/dsa.c */                   \
  X(linear_attn) /* models/linear_attn.c */        \
  X(performer)   /* models/performer.c */          \
  X(retnet)      /* models/retnet.c */             \
  X(gla)         /* models/gla.c */                \
  X(rwkv7)       /* models/rwkv7.c */              \
  X(s4d)         /* models/s4d.c */                \
  X(mamba)       /* models/mamba.c */              \
  X(sparse_transformer) /* models/sparse_transformer.c */ \
  X(longformer)  /* models/longformer.c */         \
  X(bigbird)     /* models/bigbird.c */            \
  X(nsa)         /* models/nsa.c */

#define DECLARE(n) extern const at_mixer_impl at_mixer_##n;
MIXERS(DECLARE)
#define ENTRY(n) &at_mixer_##n,
static const at_mixer_impl *const registry[] = {MIXERS(ENTRY)};

_Static_assert(sizeof registry / sizeof registry[0] <= AT_MAX_MIXERS, "raise AT_MAX_MIXERS");

int at_mixer_count(void) { return (int)AT_ARRAY_LEN(registry); }

const at_mixer_impl *at_mixer_impl_of(at_mixer_kind id) {
  return id >= 0 && id < at_mixer_count() ? registry[id] : NULL;
}

at_mixer_kind at_mixer_id(const at_mixer_impl *impl) {
  for (int i = 0; i < at_mixer_count(); i++)
    if (registry[i] == impl) return i;
  AT_ASSERT_MSG(0, "mixer implementation not in the registry");
  return -1;
}

const char *at_mixer_name(at_mixer_kind k) {
  const at_mixer_impl *m = at_mixer_impl_of(k);
  return m ? m->name : "unknown";
}

int at_mixer_from_name(const char *name) {
  if (!name) return -1;
  for (int i = 0; i < at_mixer_count(); i++)
    if (strcmp(name, registry[i]->name) == 0) return i;
  return -1;
}

const char *const at_mixer_position_names[] = {"rope", "nope", "inherit", NULL};
const int at_mixer_position_vals[] = {AT_POS_ROPE, AT_POS_NOPE, AT_POS_INHERIT};

void at_mixer_opts_defaults(const at_mixer_impl *impl, void *opts) {
  AT_ASSERT(impl->opts_size >= sizeof(at_mixer_common) && impl->opts_size <= AT_MIXER_OPTS_BYTES);
  memset(opts, 0, AT_MIXER_OPTS_BYTES);
  at_mixer_common *c = opts;
  c->position = AT_POS_NOPE; /* without a position option: no positions */
  for (int i = 0; i < impl->n_opts; i++) {
    const at_mixer_opt *o = &impl->opts[i];
    char *p = (char *)opts + o->off;
    switch (o->type) {
    case AT_OPT_INT: *(int64_t *)p = (int64_t)o->def; break;
    case AT_OPT_REAL: *(double *)p = o->def; break;
    case AT_OPT_BOOL:
    case AT_OPT_ENUM: *(int *)p = (int)o->def; break;
    }
  }
}

int at_mixer_used(const at_model_cfg *cfg, at_mixer_kind id) {
  for (int i = 0; i < cfg->n_layers; i++)
    if (cfg->layers[i] == id) return 1;
  return 0;
}

void at_mixer_io_stat(at_mixer_io *io, const char *name, double value) {
  for (int i = 0; i < io->n_stats; i++)
    if (strcmp(io->stats[i].name, name) == 0) {
      io->stats[i].sum += value;
      io->stats[i].n++;
      return;
    }
  AT_ASSERT_MSG(io->n_stats < AT_MAX_STATS, "more than AT_MAX_STATS statistics");
  io->stats[io->n_stats++] = (at_mixer_stat){name, value, 1};
}

static const at_mixer_opt *find_opt(const at_mixer_impl *impl, const char *key) {
  for (int i = 0; impl && i < impl->n_opts; i++)
    if (strcmp(impl->opts[i].key, key) == 0) return &impl->opts[i];
  return NULL;
}

double at_mixer_opt_get(const at_model_cfg *cfg, at_mixer_kind id, const char *key) {
  const at_mixer_opt *o = find_opt(at_mixer_impl_of(id), key);
  if (!o) return NAN;
  const char *p = (const char *)cfg->mixer[id].bytes + o->off;
  switch (o->type) {
  case AT_OPT_INT: return (double)*(const int64_t *)p;
  case AT_OPT_REAL: return *(const double *)p;
  case AT_OPT_BOOL:
  case AT_OPT_ENUM: return (double)*(const int *)p;
  }
  return NAN;
}

at_status at_mixer_opt_set(at_model_cfg *cfg, at_mixer_kind id, const char *key, double value) {
  const at_mixer_impl *impl = at_mixer_impl_of(id);
  const at_mixer_opt *o = find_opt(impl, key);
  if (!o) return at_error(AT_E_ARG, "mixer %s has no option '%s'", at_mixer_name(id), key);
  int range = o->type == AT_OPT_ENUM || (value >= o->lo && value <= o->hi && !(o->lo_open && value == o->lo) &&
                                         !(o->hi_open && value == o->hi));
  if (!range || (o->type != AT_OPT_REAL && value != floor(value)))
    return at_error(AT_E_ARG, "mixer %s: option %s = %g is out of its range", impl->name, key, value);
  char *p = (char *)cfg->mixer[id].bytes + o->off;
  switch (o->type) {
  case AT_OPT_INT: *(int64_t *)p = (int64_t)value; break;
  case AT_OPT_REAL: *(double *)p = value; break;
  case AT_OPT_BOOL:
  case AT_OPT_ENUM: *(int *)p = (int)value; break;
  }
  return AT_OK;
}

/* "integer 0..4096", "number < 0", "true | false", "sigmoid | swish | none" */
static void opt_type(const at_mixer_opt *o, char *buf, size_t n) {
  switch (o->type) {
  case AT_OPT_INT: snprintf(buf, n, "integer %.0f..%.0f", o->lo, o->hi); return;
  case AT_OPT_BOOL: snprintf(buf, n, "true | false"); return;
  case AT_OPT_REAL:
    if (isfinite(o->lo) && isfinite(o->hi))
      snprintf(buf, n, "number in %c%g, %g%c", o->lo_open ? '(' : '[', o->lo, o->hi, o->hi_open ? ')' : ']');
    else if (isfinite(o->lo)) snprintf(buf, n, "number %s %g", o->lo_open ? ">" : ">=", o->lo);
    else snprintf(buf, n, "number %s %g", o->hi_open ? "<" : "<=", o->hi);
    return;
  case AT_OPT_ENUM: {
    size_t len = 0;
    buf[0] = 0;
    for (int i = 0; o->names[i] && len < n; i++) len += (size_t)snprintf(buf + len, n - len, "%s%s", i ? " | " : "", o->names[i]);
    return;
  }
  }
}

static void opt_default(const at_mixer_opt *o, char *buf, size_t n) {
  if (o->type == AT_OPT_BOOL) {
    snprintf(buf, n, "%s", o->def != 0 ? "true" : "false");
  } else if (o->type == AT_OPT_ENUM) {
    snprintf(buf, n, "?");
    for (int i = 0; o->names[i]; i++)
      if ((o->vals ? o->vals[i] : i) == (int)o->def) snprintf(buf, n, "%s", o->names[i]);
  } else {
    snprintf(buf, n, "%g", o->def);
  }
}

/* A Markdown table cell: '|' escaped. */
static void md_cell(FILE *out, const char *text) {
  fputs(" ", out);
  for (const char *c = text; *c; c++) {
    if (*c == '|') fputc('\\', out);
    fputc(*c, out);
  }
  fputs(" |", out);
}

void at_mixers_describe(FILE *out, int markdown) {
  for (int k = 0; k < at_mixer_count(); k++) {
    const at_mixer_impl *m = registry[k];
    if (markdown) fprintf(out, "#### `%s` (%s)\n\n%s.\n\n| option | type | default | meaning |\n|---|---|---|---|\n", m->name, m->family, m->summary);
    else fprintf(out, "%s (%s): %s\n", m->name, m->family, m->summary);
    for (int i = 0; i < m->n_opts; i++) {
      char type[160], def[64];
      opt_type(&m->opts[i], type, sizeof type);
      opt_default(&m->opts[i], def, sizeof def);
      if (markdown) {
        fprintf(out, "| `%s` |", m->opts[i].key);
        md_cell(out, type);
        md_cell(out, def);
        md_cell(out, m->opts[i].help);
        fputc('\n', out);
      } else fprintf(out, "    %-17s %-30s [%s] %s\n", m->opts[i].key, type, def, m->opts[i].help);
    }
    fprintf(out, "\n");
  }
}
