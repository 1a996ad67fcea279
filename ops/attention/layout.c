/* ops/attention/layout.c: block-sparse attention layouts (layout.h).
 *
 * The builder classifies every (query block, key block) rectangle that
 * holds a causal pair from the predicate's parts in O(1) each, with no
 * per-pair scan: every rule term is a condition on i - j, on i / l and j / l,
 * on j mod l, or on membership in a global list, so "some visible pair" and
 * "every causal pair visible" reduce to interval tests (prefix counts for
 * the globals). "Some" is exact for the union of terms (the union is non-
 * empty iff a term is); "every" is tested per term, which may call a tile
 * MASKED that a union of terms happens to fill: that only costs a mask.
 */
#include "ops/attention/layout.h"

#include <string.h>

#include "core/rng.h"

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; } /* a >= 0, b > 0 */

/* ---- the predicate's parts ----------------------------------------------------- */

static int64_t set_of(const at_attn_layout *L, int64_t b, int64_t hq, int64_t *sb, int64_t *sh) {
  *sb = L->batch == 1 ? 0 : b;
  *sh = L->heads == 1 ? 0 : hq / L->head_group;
  return *sb * L->heads + *sh;
}

int64_t at_attn_layout_set(const at_attn_layout *L, int64_t b, int64_t hq) {
  int64_t sb, sh;
  return set_of(L, b, hq, &sb, &sh);
}

static const at_attn_rule *rule_of(const at_attn_layout *L, int64_t sh) {
  return L->n_rules ? &L->rules[L->n_rules == 1 ? 0 : sh] : NULL;
}

static const unsigned char *global_of(const at_attn_layout *L, int64_t sb, const int64_t **pre) {
  if (!L->global) return *pre = NULL, NULL;
  int64_t g = L->global_rows == 1 ? 0 : sb;
  *pre = L->global_prefix + g * (L->T + 1);
  return L->global + g * L->T;
}

static int64_t dil(const at_attn_rule *r) { return r->dilation > 1 ? r->dilation : 1; }
static int64_t summary_lo(const at_attn_rule *r) { return r->block - r->summary - r->shift; }

/* The rule at one pair with j <= i, written as its definition. */
static int rule_at(const at_attn_rule *r, int64_t i, int64_t j) {
  int64_t dt = i - j;
  if (r->causal) return 1;
  if (r->window && dt % dil(r) == 0 && dt / dil(r) < r->window) return 1;
  if (r->stride && dt % r->stride == 0) return 1;
  if (r->block && r->same_block && i / r->block == j / r->block) return 1;
  if (r->block && r->summary) {
    int64_t m = j % r->block, a = summary_lo(r);
    if (m >= a && m < a + r->summary) return 1;
  }
  return 0;
}

static int listed_at(const at_attn_layout *L, int64_t s, int64_t qb, int64_t kb) {
  if (!L->listed_row) return 0;
  const int64_t *rw = L->listed_row + s * L->nqb + qb;
  int64_t lo = rw[0], hi = rw[1]; /* binary search in the sorted list */
  while (lo < hi) {
    int64_t mid = (lo + hi) / 2;
    if (L->listed_col[mid] < kb) lo = mid + 1;
    else hi = mid;
  }
  return lo < rw[1] && L->listed_col[lo] == kb;
}

int at_attn_layout_visible(const at_attn_layout *L, int64_t b, int64_t hq, int64_t i, int64_t j) {
  if (j > i || j < 0 || i >= L->T) return 0;
  int64_t sb, sh, s = set_of(L, b, hq, &sb, &sh);
  const int64_t *pre;
  const unsigned char *g = global_of(L, sb, &pre);
  const at_attn_rule *r = rule_of(L, sh);
  return (g && (g[i] || g[j])) || (r && rule_at(r, i, j)) || listed_at(L, s, i / L->bq, j / L->bk);
}

/* Sets vis[j - j0] = 1 for j = hi, hi - step, ... down to lo (lo <= hi). */
static void mark_progression(unsigned char *vis, int64_t j0, int64_t lo, int64_t hi, int64_t step) {
  for (int64_t j = hi; j >= lo; j -= step) vis[j - j0] = 1;
}

static void mark_range(unsigned char *vis, int64_t j0, int64_t lo, int64_t hi) { /* [lo, hi) */
  if (hi > lo) memset(vis + (lo - j0), 1, (size_t)(hi - lo));
}

/* The rule over keys [j0, je) of row i (je <= i + 1): intervals and
 * progressions, one division per term. */
static void rule_row(const at_attn_rule *r, int64_t i, int64_t j0, int64_t je, unsigned char *vis) {
  if (r->causal) {
    mark_range(vis, j0, j0, je);
    return;
  }
  if (r->window) { /* j = i - k d, k < W, in [j0, je) */
    int64_t d = dil(r), kmin = ceil_div(i - (je - 1), d), kmax = AT_MIN(r->window - 1, (i - j0) / d);
    if (kmin <= kmax) mark_progression(vis, j0, i - kmax * d, i - kmin * d, d);
  }
  if (r->stride) {
    int64_t l = r->stride, kmin = ceil_div(i - (je - 1), l), kmax = (i - j0) / l;
    if (kmin <= kmax) mark_progression(vis, j0, i - kmax * l, i - kmin * l, l);
  }
  if (r->block && r->same_block) mark_range(vis, j0, AT_MAX(j0, i / r->block * r->block), je);
  if (r->block && r->summary) {
    int64_t a = summary_lo(r);
    for (int64_t m = j0 / r->block * r->block; m < je; m += r->block)
      mark_range(vis, j0, AT_MAX(j0, m + a), AT_MIN(je, m + a + r->summary));
  }
}

void at_attn_layout_row(const at_attn_layout *L, int64_t b, int64_t hq, int64_t i, int64_t j0,
                        int64_t n, unsigned char *vis) {
  memset(vis, 0, (size_t)n);
  int64_t je = AT_MIN(AT_MIN(j0 + n, i + 1), L->T), lo = AT_MAX(j0, 0);
  if (je <= lo) return;
  int64_t sb, sh, s = set_of(L, b, hq, &sb, &sh);
  const int64_t *pre;
  const unsigned char *g = global_of(L, sb, &pre);
  if (g && g[i]) {
    mark_range(vis, j0, lo, je);
    return;
  }
  if (g)
    for (int64_t j = lo; j < je; j++) vis[j - j0] |= g[j] != 0;
  const at_attn_rule *r = rule_of(L, sh);
  if (r) rule_row(r, i, lo, je, vis + (lo - j0));
  if (L->listed_row) {
    const int64_t *rw = L->listed_row + s * L->nqb + i / L->bq;
    for (int64_t e = rw[0]; e < rw[1]; e++) {
      int64_t c0 = (int64_t)L->listed_col[e] * L->bk;
      mark_range(vis, j0, AT_MAX(lo, c0), AT_MIN(je, c0 + L->bk));
    }
  }
}

/* ---- classifying a rectangle [i0, i1] x [j0, j1] (j0 <= i1) ------------------------ */

/* Some pair with j <= i satisfies the rule. */
static int rule_any(const at_attn_rule *r, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  int64_t lo = AT_MAX(0, i0 - j1), hi = i1 - j0; /* the causal pairs' i - j: every value in [lo, hi] */
  if (r->causal) return 1;
  if (r->window) {
    int64_t d = dil(r), k = ceil_div(lo, d);
    if (k < r->window && k * d <= hi) return 1;
  }
  if (r->stride && ceil_div(lo, r->stride) * r->stride <= hi) return 1;
  if (r->block && r->same_block &&
      AT_MAX(i0, j0) / r->block <= AT_MIN(i1, j1) / r->block) /* a shared block; j <= i in it */
    return 1;
  if (r->block && r->summary) { /* a summary key in [j0, min(j1, i1)] */
    int64_t jb = AT_MIN(j1, i1), l = r->block, a = summary_lo(r), m = j0 % l, j;
    j = m < a ? j0 - m + a : m < a + r->summary ? j0 : j0 - m + l + a;
    if (j <= jb) return 1;
  }
  return 0;
}

/* Every pair with j <= i satisfies one term of the rule. */
static int rule_all(const at_attn_rule *r, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  if (r->causal || r->stride == 1) return 1;
  if (r->window && dil(r) == 1 && i1 - j0 < r->window) return 1;
  if (r->block && r->same_block && i0 / r->block == i1 / r->block &&
      j0 / r->block == j1 / r->block && i0 / r->block == j0 / r->block)
    return 1;
  if (r->block && r->summary && j0 / r->block == j1 / r->block) {
    int64_t a = summary_lo(r);
    if (j0 % r->block >= a && j1 % r->block < a + r->summary) return 1;
  }
  return 0;
}

static int64_t count_in(const int64_t *pre, int64_t lo, int64_t hi) { /* globals in [lo, hi] */
  return hi < lo ? 0 : pre[hi + 1] - pre[lo];
}

static int global_any(const int64_t *pre, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  return count_in(pre, AT_MAX(i0, j0), i1) > 0 || count_in(pre, j0, AT_MIN(j1, i1)) > 0;
}

static int global_all(const int64_t *pre, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  return count_in(pre, i0, i1) == i1 - i0 + 1 || count_in(pre, j0, j1) == j1 - j0 + 1;
}

/* The tiles of query block qb of set s (ascending key blocks); writes them
 * when col is not NULL. Returns their number. */
static int64_t build_row(const at_attn_layout *L, int64_t s, int64_t qb, int32_t *col,
                         unsigned char *kind) {
  int64_t sb = s / L->heads, sh = s % L->heads;
  const at_attn_rule *r = rule_of(L, sh);
  const int64_t *pre;
  global_of(L, sb, &pre);
  const int32_t *lc = NULL, *le = NULL;
  if (L->listed_row) {
    const int64_t *rw = L->listed_row + s * L->nqb + qb;
    lc = L->listed_col + rw[0], le = L->listed_col + rw[1];
  }
  int64_t i0 = qb * L->bq, i1 = AT_MIN(L->T, i0 + L->bq) - 1, n = 0;
  for (int64_t kb = 0; kb <= i1 / L->bk; kb++) {
    int64_t j0 = kb * L->bk, j1 = AT_MIN(L->T, j0 + L->bk) - 1;
    while (lc && lc < le && *lc < kb) lc++;
    int listed = lc && lc < le && *lc == kb, k;
    if (listed || (r && rule_all(r, i0, i1, j0, j1)) || (pre && global_all(pre, i0, i1, j0, j1)))
      k = j1 <= i0 ? AT_TILE_FULL : AT_TILE_CAUSAL;
    else if ((r && rule_any(r, i0, i1, j0, j1)) || (pre && global_any(pre, i0, i1, j0, j1)))
      k = AT_TILE_MASKED;
    else
      continue;
    if (col) col[n] = (int32_t)kb, kind[n] = (unsigned char)k;
    n++;
  }
  return n;
}

/* ---- building ------------------------------------------------------------------ */

static int check_rule(at_ctx *c, const at_attn_rule *r, int64_t h) {
  if (r->window < 0 || r->dilation < 0 || r->stride < 0 || r->block < 0 || r->summary < 0 ||
      r->shift < 0) {
    at_fail(c, AT_E_ARG, "attention layout: rule %lld has a negative term", (long long)h);
    return 0;
  }
  if ((r->same_block || r->summary) && r->block < 1) {
    at_fail(c, AT_E_ARG, "attention layout: rule %lld uses same_block or summary without a block",
            (long long)h);
    return 0;
  }
  if (r->summary + r->shift > r->block) {
    at_fail(c, AT_E_ARG,
            "attention layout: rule %lld: summary %lld + shift %lld exceed the block %lld",
            (long long)h, (long long)r->summary, (long long)r->shift, (long long)r->block);
    return 0;
  }
  return 1;
}

static int check_pattern(at_ctx *c, const at_attn_pattern *p, at_attn_layout *L) {
  L->T = p->T;
  L->bq = p->block_q ? p->block_q : AT_ATTN_TILE_Q;
  L->bk = p->block_k ? p->block_k : AT_ATTN_TILE_K;
  L->batch = p->batch ? p->batch : 1;
  L->heads = p->heads ? p->heads : 1;
  L->head_group = p->head_group ? p->head_group : 1;
  if (L->T < 1 || L->bq < 1 || L->bk < 1 || L->batch < 1 || L->heads < 1 || L->head_group < 1) {
    at_fail(c, AT_E_ARG,
            "attention layout: T %lld, blocks %lld x %lld, batch %lld, heads %lld, head_group "
            "%lld must be positive",
            (long long)p->T, (long long)L->bq, (long long)L->bk, (long long)L->batch,
            (long long)L->heads, (long long)L->head_group);
    return 0;
  }
  L->nqb = ceil_div(L->T, L->bq), L->nkb = ceil_div(L->T, L->bk);
  if (L->nkb > INT32_MAX) { /* key blocks are int32 in the lists */
    at_fail(c, AT_E_ARG, "attention layout: %lld key blocks do not fit the int32 lists",
            (long long)L->nkb);
    return 0;
  }
  if (p->rules && p->n_rules != 1 && p->n_rules != L->heads) {
    at_fail(c, AT_E_ARG, "attention layout: %lld rules for %lld head sets (give 1 or one each)",
            (long long)p->n_rules, (long long)L->heads);
    return 0;
  }
  for (int64_t h = 0; p->rules && h < p->n_rules; h++)
    if (!check_rule(c, &p->rules[h], h)) return 0;
  if (p->global && p->global_rows != 1 && p->global_rows != L->batch) {
    at_fail(c, AT_E_ARG, "attention layout: %lld global rows for %lld batch sets (give 1 or one each)",
            (long long)p->global_rows, (long long)L->batch);
    return 0;
  }
  if (p->listed && p->n_listed < 0) {
    at_fail(c, AT_E_ARG, "attention layout: n_listed %lld is negative", (long long)p->n_listed);
    return 0;
  }
  return 1;
}

/* Copies the rules and the globals (with prefix counts). */
static int copy_parts(at_ctx *c, const at_attn_pattern *p, at_attn_layout *L) {
  if (p->rules && p->n_rules) {
    L->n_rules = p->n_rules;
    L->rules = at_scratch(c, (size_t)p->n_rules * sizeof(at_attn_rule));
    if (!L->rules) return 0;
    memcpy(L->rules, p->rules, (size_t)p->n_rules * sizeof(at_attn_rule));
  }
  if (p->global) {
    int64_t rows = L->global_rows = p->global_rows, T = L->T;
    L->global = at_scratch(c, (size_t)(rows * T));
    L->global_prefix = at_scratch(c, (size_t)(rows * (T + 1)) * sizeof(int64_t));
    if (!L->global || !L->global_prefix) return 0;
    for (int64_t g = 0; g < rows; g++) {
      int64_t *pre = L->global_prefix + g * (T + 1);
      pre[0] = 0;
      for (int64_t t = 0; t < T; t++) {
        L->global[g * T + t] = p->global[g * T + t] != 0;
        pre[t + 1] = pre[t] + L->global[g * T + t];
      }
    }
  }
  return 1;
}

/* The listed blocks per (set, query block): in range, causal, sorted, unique. */
static int copy_listed(at_ctx *c, const at_attn_pattern *p, at_attn_layout *L) {
  if (!p->listed) return 1;
  int64_t rows = L->batch * L->heads * L->nqb, n = p->n_listed;
  L->listed_row = at_scratch(c, (size_t)(rows + 1) * sizeof(int64_t));
  L->listed_col = at_scratch(c, (size_t)AT_MAX(rows * n, 1) * sizeof(int32_t));
  if (!L->listed_row || !L->listed_col) return 0;
  int64_t out = 0;
  for (int64_t rw = 0; rw < rows; rw++) {
    L->listed_row[rw] = out;
    int64_t qb = rw % L->nqb, last = (AT_MIN(L->T, (qb + 1) * L->bq) - 1) / L->bk;
    int32_t *dst = L->listed_col + out;
    int64_t m = 0;
    for (int64_t e = 0; e < n; e++) {
      int32_t kb = p->listed[rw * n + e];
      if (kb >= L->nkb) {
        at_fail(c, AT_E_ARG,
                "attention layout: listed key block %d (batch set %lld, head set %lld, query "
                "block %lld) is outside 0 .. %lld",
                (int)kb, (long long)(rw / L->nqb / L->heads), (long long)(rw / L->nqb % L->heads),
                (long long)qb, (long long)(L->nkb - 1));
        return 0;
      }
      if (kb < 0 || kb > last) continue; /* unused, or after the query block */
      int64_t x = m++;                    /* insertion sort: lists are short */
      while (x > 0 && dst[x - 1] > kb) dst[x] = dst[x - 1], x--;
      dst[x] = kb;
    }
    int64_t u = 0;
    for (int64_t x = 0; x < m; x++)
      if (u == 0 || dst[u - 1] != dst[x]) dst[u++] = dst[x];
    out += u;
  }
  L->listed_row[rows] = out;
  return 1;
}

at_attn_layout *at_attn_layout_new(at_ctx *c, const at_attn_pattern *p) {
  if (!p) return at_fail(c, AT_E_ARG, "attention layout: no pattern");
  at_attn_layout *L = at_scratch_zero(c, sizeof *L);
  if (!L || !check_pattern(c, p, L) || !copy_parts(c, p, L) || !copy_listed(c, p, L)) return NULL;
  int64_t rows = L->batch * L->heads * L->nqb;
  L->row = at_scratch(c, (size_t)(rows + 1) * sizeof(int64_t));
  if (!L->row) return NULL;
  L->row[0] = 0;
  for (int64_t rw = 0; rw < rows; rw++)
    L->row[rw + 1] = L->row[rw] + build_row(L, rw / L->nqb, rw % L->nqb, NULL, NULL);
  L->col = at_scratch(c, (size_t)AT_MAX(L->row[rows], 1) * sizeof(int32_t));
  L->kind = at_scratch(c, (size_t)AT_MAX(L->row[rows], 1));
  if (!L->col || !L->kind) return NULL;
  for (int64_t rw = 0; rw < rows; rw++)
    build_row(L, rw / L->nqb, rw % L->nqb, L->col + L->row[rw], L->kind + L->row[rw]);
  return L;
}

/* ---- constructors ----------------------------------------------------------------- */

at_attn_layout *at_attn_layout_rules(at_ctx *c, int64_t T, int64_t n_heads,
                                     const at_attn_rule *rules) {
  at_attn_pattern p = {.T = T, .heads = n_heads, .rules = rules, .n_rules = n_heads};
  if (n_heads < 1 || !rules)
    return at_fail(c, AT_E_ARG, "attention layout: %lld rules (need at least one)", (long long)n_heads);
  return at_attn_layout_new(c, &p);
}

at_attn_layout *at_attn_layout_causal(at_ctx *c, int64_t T) {
  at_attn_rule r = {.causal = 1};
  return at_attn_layout_rules(c, T, 1, &r);
}

at_attn_layout *at_attn_layout_window(at_ctx *c, int64_t T, int64_t W) {
  if (W < 1) return at_fail(c, AT_E_ARG, "attention layout: window %lld must be at least 1", (long long)W);
  at_attn_rule r = {.window = W};
  return at_attn_layout_rules(c, T, 1, &r);
}

at_attn_rule at_attn_rule_strided(int64_t l, int parts) {
  at_attn_rule r = {0};
  if (parts & AT_ST_LOCAL) r.window = l + 1;
  if (parts & AT_ST_SECOND) r.stride = l;
  return r;
}

at_attn_rule at_attn_rule_fixed(int64_t l, int64_t csum, int parts, int64_t shift) {
  at_attn_rule r = {.block = l};
  if (parts & AT_ST_LOCAL) r.same_block = 1;
  if (parts & AT_ST_SECOND) r.summary = csum, r.shift = shift;
  return r;
}

at_attn_layout *at_attn_layout_strided(at_ctx *c, int64_t T, int64_t l) {
  if (l < 1) return at_fail(c, AT_E_ARG, "attention layout: stride %lld must be at least 1", (long long)l);
  at_attn_rule r = at_attn_rule_strided(l, AT_ST_BOTH);
  return at_attn_layout_rules(c, T, 1, &r);
}

at_attn_layout *at_attn_layout_fixed(at_ctx *c, int64_t T, int64_t l, int64_t csum) {
  if (l < 1 || csum < 1 || csum > l)
    return at_fail(c, AT_E_ARG, "attention layout: fixed pattern needs 1 <= c <= l, got l %lld c %lld",
                   (long long)l, (long long)csum);
  at_attn_rule r = at_attn_rule_fixed(l, csum, AT_ST_BOTH, 0);
  return at_attn_layout_rules(c, T, 1, &r);
}

at_attn_layout *at_attn_layout_longformer(at_ctx *c, int64_t T, int64_t W, int64_t n_heads,
                                          const int64_t *dilation, int64_t batch,
                                          const unsigned char *global) {
  if (W < 1 || n_heads < 1 || batch < 1)
    return at_fail(c, AT_E_ARG, "longformer layout: window %lld, heads %lld, batch %lld must be positive",
                   (long long)W, (long long)n_heads, (long long)batch);
  int64_t nr = dilation ? n_heads : 1;
  at_attn_rule *r = at_scratch_zero(c, (size_t)nr * sizeof *r);
  if (!r) return NULL;
  for (int64_t h = 0; h < nr; h++) {
    if (dilation && dilation[h] < 1)
      return at_fail(c, AT_E_ARG, "longformer layout: dilation %lld of head %lld must be at least 1",
                     (long long)dilation[h], (long long)h);
    r[h].window = W, r[h].dilation = dilation ? dilation[h] : 1;
  }
  at_attn_pattern p = {.T = T, .heads = nr, .rules = r, .n_rules = nr, .batch = global ? batch : 1,
                       .global = global, .global_rows = batch};
  return at_attn_layout_new(c, &p);
}

/* Query block r's BigBird blocks into out[0 .. w + 1 + g + random): window,
 * globals, random draws from the blocks between; -1 pads. */
static void bigbird_row(int64_t r, int64_t w, int64_t g, int64_t random, at_rng *rng, int32_t *out,
                        int64_t n) {
  int64_t k = 0;
  for (int64_t x = 0; x < n; x++) out[x] = -1;
  for (int64_t kb = AT_MAX(0, r - w); kb <= r; kb++) out[k++] = (int32_t)kb;
  for (int64_t kb = 0; kb < AT_MIN(g, r - w); kb++) out[k++] = (int32_t)kb; /* not in the window */
  int64_t m = r - w - g; /* candidates g .. g + m - 1 */
  if (m <= 0) return;
  /* Floyd's sampling: `random` distinct candidates with exactly `random` draws */
  int32_t *pick = out + k;
  int64_t np = 0;
  for (int64_t top = m - AT_MIN(random, m); top < m; top++) {
    int64_t t = (int64_t)at_rng_below(rng, (uint64_t)(top + 1)), dup = 0;
    for (int64_t x = 0; x < np; x++) dup |= pick[x] == g + t;
    pick[np++] = (int32_t)(g + (dup ? top : t));
  }
}

at_attn_layout *at_attn_layout_bigbird(at_ctx *c, int64_t T, int64_t block, int64_t w,
                                       int64_t g, int64_t random, int64_t n_heads,
                                       uint64_t seed) {
  if (T < 1 || block < 1 || w < 0 || g < 0 || random < 0 || n_heads < 1)
    return at_fail(c, AT_E_ARG,
                   "bigbird layout: T %lld, block %lld, heads %lld must be positive and window "
                   "%lld, globals %lld, random %lld not negative",
                   (long long)T, (long long)block, (long long)n_heads, (long long)w, (long long)g,
                   (long long)random);
  int64_t nqb = ceil_div(T, block), n = w + 1 + g + random;
  int32_t *lst = at_scratch(c, (size_t)(n_heads * nqb * n) * sizeof(int32_t));
  if (!lst) return NULL;
  for (int64_t h = 0; h < n_heads; h++)
    for (int64_t r = 0; r < nqb; r++) {
      at_rng rng = at_rng_make(seed, ((uint64_t)h << 32) | (uint64_t)r); /* independent of T */
      bigbird_row(r, w, g, random, &rng, lst + (h * nqb + r) * n, n);
    }
  at_attn_pattern p = {.T = T, .block_q = block, .block_k = block, .heads = n_heads,
                       .listed = lst, .n_listed = n};
  return at_attn_layout_new(c, &p);
}

at_attn_layout *at_attn_layout_selected(at_ctx *c, int64_t T, int64_t bq, int64_t bk,
                                        const at_itensor *sel, int64_t group) {
  if (!sel) return NULL;
  if (bq < 1 || bk < 1 || group < 1 || T < 1)
    return at_fail(c, AT_E_ARG, "selected layout: T %lld, blocks %lld x %lld, group %lld must be positive",
                   (long long)T, (long long)bq, (long long)bk, (long long)group);
  if (sel->ndim != 4 || sel->shape[2] != ceil_div(T, bq)) {
    char s[96];
    return at_fail(c, AT_E_SHAPE,
                   "selected layout: selection %s must be [B, H, %lld query blocks, n]",
                   at_shape_str(sel->ndim, sel->shape, s), (long long)ceil_div(T, bq));
  }
  at_attn_pattern p = {.T = T, .block_q = bq, .block_k = bk, .batch = sel->shape[0],
                       .heads = sel->shape[1], .head_group = group, .listed = sel->data,
                       .n_listed = sel->shape[3]};
  return at_attn_layout_new(c, &p);
}

/* ---- reading ---------------------------------------------------------------------- */

int64_t at_attn_layout_tiles(const at_attn_layout *L, int64_t B, int64_t HQ) {
  int64_t n = 0;
  for (int64_t b = 0; b < B; b++)
    for (int64_t hq = 0; hq < HQ; hq++) {
      int64_t s = at_attn_layout_set(L, b, hq);
      n += L->row[(s + 1) * L->nqb] - L->row[s * L->nqb];
    }
  return n;
}

int at_attn_layout_check(at_ctx *c, const char *op, const at_attn_layout *L, int64_t B,
                         int64_t T, int64_t HQ) {
  if (L->T != T) {
    at_fail(c, AT_E_SHAPE, "%s: the layout is for T = %lld, the inputs have T = %lld", op,
            (long long)L->T, (long long)T);
    return 0;
  }
  if (L->batch != 1 && L->batch != B) {
    at_fail(c, AT_E_SHAPE, "%s: the layout has %lld batch sets for a batch of %lld", op,
            (long long)L->batch, (long long)B);
    return 0;
  }
  if (L->heads != 1 && L->heads * L->head_group != HQ) {
    at_fail(c, AT_E_SHAPE, "%s: the layout's %lld head sets of %lld query heads do not cover %lld "
            "query heads", op, (long long)L->heads, (long long)L->head_group, (long long)HQ);
    return 0;
  }
  return 1;
}
