/* data/text.c: byte-level language modelling from a text file or a
 * directory of text files.
 *
 * Vocabulary: the 256 byte values (vocab_size >= 256; larger ids are never
 * produced). Every position is scored: tokens = bytes [o, o+T) of a split,
 * labels = bytes [o+1, o+T+1) (the next byte).
 *
 * Corpus. `path` is a file, or a directory whose regular files are read in
 * name order (not recursively), skipping hidden files and the index files
 * of the fortune format (*.dat, *.u8). The default is Debian's `fortunes`
 * package, /usr/share/games/fortunes, where documents are separated by
 * lines holding a single "%".
 *
 * Held-out split. Each file is cut once: its head goes to the training
 * split and its tail, about val_fraction of it, to the test split, so both
 * splits draw from every file. The cut starts at the first document
 * boundary at or after (1 - val_fraction) * size: just after a "%" line if
 * one follows, else at the next line start, else exactly there. The heads,
 * and the tails, are concatenated in file order.
 *
 * Examples. Training example i starts at a uniform offset in the training
 * bytes, drawn from its own random stream; the test split tiles the held-out
 * bytes with windows at offsets 0, T, 2T, ... (each held-out byte after the
 * first is predicted exactly once), all of them when test_examples is 0,
 * else test_examples of them spread evenly.
 *
 * Token cache (`cache`, HDF5, empty = none): datasets "train" and "val"
 * (uint8) and root attributes
 *   format "attnlab-token-cache-v1", source (resolved path), source_size
 *   (total bytes of the files read), source_mtime_ns (newest modification
 *   time of the files and of the directory), source_files (count),
 *   source_listing (FNV-1a 64 over each file's path, NUL, size and mtime_ns
 *   as little-endian int64), val_fraction, checksum (FNV-1a 64 of the train
 *   bytes followed by the val bytes).
 * It is reused when every attribute matches the source as it is now and the
 * data match the checksum and the source's size; a stale cache (source
 * changed) or a damaged one that attnlab wrote (sealed: see core/h5io.h) is
 * rebuilt. Anything else at the cache path (not HDF5, an HDF5 file without
 * the format attribute, an unsealed HDF5 file that cannot be read) is
 * someone else's: it is refused, never overwritten.
 *
 * Token files. A `path` naming a *.bin file is a pre-tokenized corpus
 * (llm.c's or nanoGPT's layout, data/tokens.c): its tokens are the
 * vocabulary (vocab_size: the file's, or data.vocab_size), the last
 * val_fraction of them (exactly) is held out, and no cache is written.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/h5io.h"
#include "data/internal.h"

#define CACHE_FORMAT "attnlab-token-cache-v1"

/* ---- the source: files, size and modification time ---------------------------- */

typedef struct src_file {
  char *path;
  int64_t size, mtime_ns;
} src_file;

typedef struct source {
  src_file *files;  /* in read order */
  int n;
  int64_t size;     /* total bytes */
  int64_t mtime_ns; /* newest of the files' and the directory's */
  uint64_t listing; /* FNV-1a 64 of every file's (path, size, mtime_ns), in order */
  char *resolved;   /* realpath of the source */
} source;

static void source_free(source *s) {
  for (int i = 0; i < s->n; i++) free(s->files[i].path);
  free(s->files);
  free(s->resolved);
  memset(s, 0, sizeof *s);
}

static int64_t mtime_ns(const struct stat *st) {
  return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int cmp_file(const void *a, const void *b) {
  return strcmp(((const src_file *)a)->path, ((const src_file *)b)->path);
}

static uint64_t fnv1a(const void *p, size_t n, uint64_t h) {
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

static at_status add_file(source *s, int *cap, char *path, const struct stat *st) {
  if (s->n == *cap) {
    int c = *cap ? 2 * *cap : 64;
    src_file *f = realloc(s->files, (size_t)c * sizeof *f);
    if (!f) {
      free(path);
      return at_error(AT_E_NOMEM, "text: out of memory listing files");
    }
    s->files = f, *cap = c;
  }
  s->files[s->n++] = (src_file){path, (int64_t)st->st_size, mtime_ns(st)};
  s->size += (int64_t)st->st_size;
  if (mtime_ns(st) > s->mtime_ns) s->mtime_ns = mtime_ns(st);
  return AT_OK;
}

/* Lists the source's files (stat only, nothing is read). Errors name the path. */
static at_status source_scan(const char *path, source *s) {
  memset(s, 0, sizeof *s);
  struct stat st;
  if (!path[0]) return at_error(AT_E_IO, "text: path is empty (a text file or a directory of text files)");
  if (stat(path, &st) != 0)
    return at_error(AT_E_IO, "text: corpus path '%s' does not exist or cannot be accessed (%s)", path,
                    strerror(errno));
  int cap = 0;
  at_status rc = AT_OK;
  s->resolved = realpath(path, NULL);
  if (!s->resolved) return at_error(AT_E_IO, "text: cannot resolve '%s' (%s)", path, strerror(errno));
  if (S_ISREG(st.st_mode)) {
    char *f = strdup(path);
    if (!f) {
      rc = at_error(AT_E_NOMEM, "text: out of memory");
      goto fail;
    }
    if ((rc = add_file(s, &cap, f, &st)) != AT_OK) goto fail;
  } else if (S_ISDIR(st.st_mode)) {
    s->mtime_ns = mtime_ns(&st); /* a file added or removed changes this */
    DIR *d = opendir(path);
    if (!d) {
      rc = at_error(AT_E_IO, "text: cannot list directory '%s' (%s)", path, strerror(errno));
      goto fail;
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
      const char *name = e->d_name;
      if (name[0] == '.' || ends_with(name, ".dat") || ends_with(name, ".u8")) continue;
      size_t len = strlen(path) + strlen(name) + 2;
      char *f = malloc(len);
      if (!f) {
        closedir(d);
        rc = at_error(AT_E_NOMEM, "text: out of memory");
        goto fail;
      }
      snprintf(f, len, "%s/%s", path, name);
      struct stat fs;
      if (stat(f, &fs) != 0 || !S_ISREG(fs.st_mode)) {
        free(f);
        continue;
      }
      if ((rc = add_file(s, &cap, f, &fs)) != AT_OK) {
        closedir(d);
        goto fail;
      }
    }
    closedir(d);
    if (s->n == 0) {
      rc = at_error(AT_E_IO, "text: directory '%s' has no text files (hidden, *.dat and *.u8 are skipped)",
                    path);
      goto fail;
    }
    qsort(s->files, (size_t)s->n, sizeof *s->files, cmp_file);
  } else {
    rc = at_error(AT_E_IO, "text: corpus path '%s' is neither a file nor a directory", path);
    goto fail;
  }
  /* catches what size and newest mtime miss: a renamed file, an older copy */
  s->listing = 1469598103934665603ull;
  for (int i = 0; i < s->n; i++) {
    const src_file *f = &s->files[i];
    s->listing = fnv1a(f->path, strlen(f->path) + 1, s->listing);
    s->listing = fnv1a(&f->size, sizeof f->size, s->listing);
    s->listing = fnv1a(&f->mtime_ns, sizeof f->mtime_ns, s->listing);
  }
  return AT_OK;
fail:
  source_free(s);
  return rc;
}

/* ---- checks ------------------------------------------------------------------------ */

/* The splits' sizes for a corpus of n tokens (a token file). */
static int64_t token_cut(const at_task_cfg *c, int64_t n) { return (int64_t)((1.0 - c->val_fraction) * (double)n); }

static at_status token_check(const at_task_cfg *c, const char **bad) {
  at_token_file tf;
  at_status st = at_token_file_probe(c->path, &tf);
  if (st == AT_OK) st = at_token_file_read(c->path, &tf, c->vocab_size, NULL);
  if (st != AT_OK) return at_task_bad(bad, "path", st, "%s", at_errmsg());
  int64_t cut = token_cut(c, tf.n), need = c->seq_len + 1;
  if (cut < need || tf.n - cut < need)
    return at_task_bad(bad, tf.n < 2 * need ? "path" : "val_fraction", AT_E_CONFIG,
                       "text: token file '%s' has %lld tokens: val_fraction %g leaves %lld for training and %lld "
                       "held out, and each split needs seq_len+1 = %lld", c->path, (long long)tf.n,
                       c->val_fraction, (long long)cut, (long long)(tf.n - cut), (long long)need);
  return AT_OK;
}

static at_status text_check(const at_task_cfg *c, const char **bad) {
  if (!(c->val_fraction > 0 && c->val_fraction < 1))
    return at_task_bad(bad, "val_fraction", AT_E_CONFIG, "text: val_fraction must be in (0, 1), not %g",
                       c->val_fraction);
  if (at_is_token_file(c->path)) return token_check(c, bad);
  if (c->vocab_size < 256)
    return at_task_bad(bad, "vocab_size", AT_E_CONFIG, "text: byte-level modelling needs vocab_size >= 256, not %lld",
                       (long long)c->vocab_size);
  source s;
  at_status st = source_scan(c->path, &s);
  if (st != AT_OK) return at_task_bad(bad, "path", st, "%s", at_errmsg());
  int64_t size = s.size, need = c->seq_len + 1;
  source_free(&s);
  /* exact split sizes need the bytes; these bounds are checked again at open */
  if (size < 2 * need)
    return at_task_bad(bad, "path", AT_E_CONFIG,
                       "text: corpus '%s' has %lld bytes, too few for a training and a held-out window of "
                       "seq_len+1 = %lld bytes", c->path, (long long)size, (long long)need);
  if (c->val_fraction * (double)size < (double)need || (1 - c->val_fraction) * (double)size < (double)need)
    return at_task_bad(bad, "val_fraction", AT_E_CONFIG,
                       "text: val_fraction %g of %lld bytes leaves a split shorter than seq_len+1 = %lld bytes",
                       c->val_fraction, (long long)size, (long long)need);
  return AT_OK;
}

/* ---- reading and splitting ----------------------------------------------------------- */

/* The first document boundary at or after s in b[0, n). */
static int64_t cut_point(const uint8_t *b, int64_t n, int64_t s) {
  for (int64_t q = s < 2 ? 2 : s; q <= n; q++) /* just after a line holding only "%" */
    if (b[q - 1] == '\n' && b[q - 2] == '%' && (q == 2 || b[q - 3] == '\n')) return q;
  for (int64_t q = s < 1 ? 1 : s; q <= n; q++) /* a line start */
    if (b[q - 1] == '\n') return q;
  return s;
}

typedef struct bytes {
  uint8_t *p;
  int64_t n, cap;
} bytes;

static at_status append(bytes *b, const uint8_t *src, int64_t n) {
  if (b->n + n > b->cap) {
    int64_t cap = AT_MAX(b->cap * 2, b->n + n);
    uint8_t *p = realloc(b->p, (size_t)AT_MAX(cap, 1));
    if (!p) return at_error(AT_E_NOMEM, "text: out of memory reading the corpus");
    b->p = p, b->cap = cap;
  }
  if (n) memcpy(b->p + b->n, src, (size_t)n);
  b->n += n;
  return AT_OK;
}

static at_status read_file(const char *path, int64_t expect, uint8_t **out) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return at_error(AT_E_IO, "text: cannot open '%s' (%s)", path, strerror(errno));
  uint8_t *buf = malloc((size_t)AT_MAX(expect, 1));
  if (!buf) {
    fclose(f);
    return at_error(AT_E_NOMEM, "text: out of memory reading '%s'", path);
  }
  size_t got = fread(buf, 1, (size_t)expect, f);
  int extra = fgetc(f) != EOF;
  int err = ferror(f);
  fclose(f);
  if (err || (int64_t)got != expect || extra) {
    free(buf);
    return at_error(AT_E_IO, "text: '%s' could not be read whole, or changed while being read", path);
  }
  *out = buf;
  return AT_OK;
}

/* Reads every file and splits it; fills t->text[0..1]. */
static at_status build_splits(at_task *t, const source *s) {
  bytes split[2] = {{0}};
  at_status st = AT_OK;
  for (int i = 0; i < s->n && st == AT_OK; i++) {
    uint8_t *b;
    int64_t n = s->files[i].size;
    if ((st = read_file(s->files[i].path, n, &b)) != AT_OK) break;
    int64_t cut = cut_point(b, n, (int64_t)((1.0 - t->cfg.val_fraction) * (double)n));
    st = append(&split[0], b, cut);
    if (st == AT_OK) st = append(&split[1], b + cut, n - cut);
    free(b);
  }
  if (st != AT_OK) {
    free(split[0].p), free(split[1].p);
    return st;
  }
  for (int k = 0; k < 2; k++) t->text[k] = split[k].p, t->text_len[k] = split[k].n;
  return AT_OK;
}

static uint64_t checksum(const uint8_t *a, int64_t na, const uint8_t *b, int64_t nb) {
  return fnv1a(b, (size_t)nb, fnv1a(a, (size_t)na, 1469598103934665603ull));
}

/* ---- the cache ----------------------------------------------------------------------------- */

typedef enum { CACHE_USED, CACHE_REBUILD, CACHE_REFUSED } cache_verdict;

/* Loads the cache into t when it is current; otherwise says why not. */
static cache_verdict cache_load(at_task *t, const source *s) {
  const char *path = t->cfg.cache;
  if (access(path, F_OK) != 0) return CACHE_REBUILD;
  at_h5 *h;
  if (at_h5_open(path, &h) != AT_OK) {
    if (at_h5_sealed(path)) return CACHE_REBUILD; /* ours, but damaged */
    at_error_prefix(AT_E_FORMAT,
                    "text: token cache '%s' is not a readable HDF5 file; refusing to overwrite it (delete it "
                    "or choose another cache path)", path);
    return CACHE_REFUSED;
  }
  cache_verdict v = CACHE_REBUILD;
  char *fmt = NULL, *src = NULL;
  uint8_t *data[2] = {NULL, NULL};
  int64_t size, mtime, files, n[2];
  double vf;
  uint64_t sum, listing;
  if (at_h5_get_attr_str(h, "/", "format", &fmt) != AT_OK || strncmp(fmt, "attnlab-token-cache", 19) != 0) {
    at_error(AT_E_FORMAT,
             "text: '%s' is an HDF5 file but not an attnlab token cache; refusing to overwrite it (delete it "
             "or choose another cache path)", path);
    v = CACHE_REFUSED;
    goto done;
  }
  if (strcmp(fmt, CACHE_FORMAT) != 0) goto done; /* another version: rebuild */
  if (at_h5_get_attr_str(h, "/", "source", &src) != AT_OK || strcmp(src, s->resolved) != 0) goto done;
  if (at_h5_get_attr_int(h, "/", "source_size", &size) != AT_OK || size != s->size) goto done;
  if (at_h5_get_attr_int(h, "/", "source_mtime_ns", &mtime) != AT_OK || mtime != s->mtime_ns) goto done;
  if (at_h5_get_attr_int(h, "/", "source_files", &files) != AT_OK || files != s->n) goto done;
  if (at_h5_get_attr_u64s(h, "/", "source_listing", 1, &listing) != AT_OK || listing != s->listing) goto done;
  if (at_h5_get_attr_double(h, "/", "val_fraction", &vf) != AT_OK || vf != t->cfg.val_fraction) goto done;
  if (at_h5_get_attr_u64s(h, "/", "checksum", 1, &sum) != AT_OK) goto done;
  static const char *const names[2] = {"train", "val"};
  for (int k = 0; k < 2; k++) {
    int nd;
    if (at_h5_shape(h, names[k], &nd, &n[k]) != AT_OK || nd != 1) goto done;
  }
  if (n[0] + n[1] != s->size) goto done; /* the splits are the whole source */
  for (int k = 0; k < 2; k++) {
    data[k] = malloc((size_t)AT_MAX(n[k], 1));
    if (!data[k] || at_h5_read_u8(h, names[k], n[k], data[k]) != AT_OK) goto done;
  }
  if (checksum(data[0], n[0], data[1], n[1]) != sum) goto done;
  for (int k = 0; k < 2; k++) t->text[k] = data[k], t->text_len[k] = n[k], data[k] = NULL;
  v = CACHE_USED;
done:
  free(fmt), free(src), free(data[0]), free(data[1]);
  at_h5_close(h);
  return v;
}

static at_status cache_write(const at_task *t, const source *s) {
  at_h5 *h;
  at_status st = at_h5_create(t->cfg.cache, &h);
  if (st != AT_OK) return at_error_prefix(st, "text: writing the token cache");
  uint64_t sum = checksum(t->text[0], t->text_len[0], t->text[1], t->text_len[1]);
  if ((st = at_h5_write_u8(h, "train", t->text_len[0], t->text[0])) == AT_OK &&
      (st = at_h5_write_u8(h, "val", t->text_len[1], t->text[1])) == AT_OK &&
      (st = at_h5_set_attr_str(h, "/", "format", CACHE_FORMAT)) == AT_OK &&
      (st = at_h5_set_attr_str(h, "/", "source", s->resolved)) == AT_OK &&
      (st = at_h5_set_attr_int(h, "/", "source_size", s->size)) == AT_OK &&
      (st = at_h5_set_attr_int(h, "/", "source_mtime_ns", s->mtime_ns)) == AT_OK &&
      (st = at_h5_set_attr_int(h, "/", "source_files", s->n)) == AT_OK &&
      (st = at_h5_set_attr_u64s(h, "/", "source_listing", 1, &s->listing)) == AT_OK &&
      (st = at_h5_set_attr_double(h, "/", "val_fraction", t->cfg.val_fraction)) == AT_OK &&
      (st = at_h5_set_attr_u64s(h, "/", "checksum", 1, &sum)) == AT_OK)
    return at_h5_commit(h) == AT_OK ? AT_OK : at_error_prefix(AT_E_IO, "text: writing the token cache");
  at_h5_close(h);
  return at_error_prefix(st, "text: writing the token cache");
}

/* ---- the task --------------------------------------------------------------------------------- */

/* cache_load under the HDF5 guard: a cache that crashes or hangs HDF5 is
 * refused (it is not an attnlab cache). */
typedef struct cache_args {
  at_task *t;
  const source *s;
} cache_args;

/* The verdict as a status, the only thing the guard's child reports:
 * AT_OK used (and loaded), AT_E_STATE rebuild, AT_E_FORMAT refused. */
static at_status cache_try(void *arg) {
  cache_args *a = arg;
  cache_verdict v = cache_load(a->t, a->s);
  return v == CACHE_USED ? AT_OK : v == CACHE_REBUILD ? AT_E_STATE : AT_E_FORMAT;
}

static cache_verdict cache_load_guarded(at_task *t, const source *s) {
  if (access(t->cfg.cache, F_OK) != 0) return CACHE_REBUILD;
  cache_args a = {t, s};
  at_status st = at_h5_guard(t->cfg.cache, cache_try, &a);
  if (st == AT_OK) return CACHE_USED;
  if (st == AT_E_STATE) return CACHE_REBUILD;
  if (!strstr(at_errmsg(), "refusing to overwrite")) /* the guard's own refusal (HDF5 crashed, ...) */
    at_error_prefix(st, "text: token cache '%s' refused; not overwriting it (delete it or choose another cache "
                    "path)", t->cfg.cache);
  return CACHE_REFUSED;
}

/* The byte corpus, from the cache when it is current. */
static at_status open_bytes(at_task *t) {
  source s;
  at_status st = source_scan(t->cfg.path, &s);
  if (st != AT_OK) return st;
  cache_verdict v = t->cfg.cache[0] ? cache_load_guarded(t, &s) : CACHE_REBUILD;
  if (v == CACHE_REFUSED) {
    source_free(&s);
    return AT_E_FORMAT; /* message set by cache_load */
  }
  if (v == CACHE_REBUILD) {
    st = build_splits(t, &s);
    if (st == AT_OK && t->cfg.cache[0]) st = cache_write(t, &s);
  }
  source_free(&s);
  t->token_bytes = 1;
  return st;
}

/* A token file, split at exactly (1 - val_fraction) of its tokens. */
static at_status open_tokens(at_task *t) {
  const at_task_cfg *c = &t->cfg;
  at_token_file tf;
  at_status st = at_token_file_probe(c->path, &tf);
  if (st != AT_OK) return st;
  int64_t cut = token_cut(c, tf.n), len[2] = {cut, tf.n - cut};
  for (int k = 0; k < 2 && st == AT_OK; k++)
    if (!(t->text[k] = malloc((size_t)AT_MAX(len[k], 1) * (size_t)tf.width)))
      st = at_error(AT_E_NOMEM, "text: out of memory for %lld tokens of '%s'", (long long)tf.n, c->path);
  uint8_t *all = st == AT_OK ? malloc((size_t)AT_MAX(tf.n, 1) * (size_t)tf.width) : NULL;
  if (st == AT_OK && !all) st = at_error(AT_E_NOMEM, "text: out of memory for %lld tokens of '%s'", (long long)tf.n, c->path);
  if (st == AT_OK) st = at_token_file_read(c->path, &tf, c->vocab_size, all);
  if (st == AT_OK) {
    memcpy(t->text[0], all, (size_t)len[0] * (size_t)tf.width);
    memcpy(t->text[1], all + len[0] * tf.width, (size_t)len[1] * (size_t)tf.width);
    t->text_len[0] = len[0], t->text_len[1] = len[1];
    t->token_bytes = tf.width;
  }
  free(all);
  return st;
}

int64_t at_task_corpus_vocab(const at_task_cfg *cfg) {
  at_token_file tf;
  if (cfg->kind != AT_TASK_TEXT || !at_is_token_file(cfg->path) || at_token_file_probe(cfg->path, &tf) != AT_OK)
    return 0;
  return tf.vocab;
}

int at_task_byte_level(const at_task_cfg *cfg) { return cfg->kind == AT_TASK_TEXT && !at_is_token_file(cfg->path); }

static at_status text_open(at_task *t) {
  at_status st = at_is_token_file(t->cfg.path) ? open_tokens(t) : open_bytes(t);
  if (st != AT_OK) return st;
  const int64_t T = t->cfg.seq_len;
  for (int k = 0; k < 2; k++)
    if (t->text_len[k] < T + 1)
      return at_error(AT_E_CONFIG,
                      "text: the %s split of '%s' has %lld %s, fewer than seq_len+1 = %lld (change "
                      "val_fraction or seq_len)", k ? "held-out" : "training", t->cfg.path,
                      (long long)t->text_len[k], t->token_bytes == 1 ? "bytes" : "tokens", (long long)(T + 1));
  t->text_tiles = (t->text_len[1] - 1) / T;
  int64_t want = t->cfg.test_examples;
  t->size[AT_SPLIT_TEST] = want > 0 && want < t->text_tiles ? want : t->text_tiles;
  return AT_OK;
}

static void text_example(const at_task *t, at_split split, int64_t i, at_rng *r, int32_t *tok, int32_t *lab,
                         int32_t *group, void *scratch) {
  (void)scratch;
  const int64_t T = t->cfg.seq_len;
  const uint8_t *b = t->text[split];
  const uint16_t *b16 = (const uint16_t *)b;
  const uint32_t *b32 = (const uint32_t *)b;
  int w = t->token_bytes;
  int64_t o;
  *group = 0;
  if (split == AT_SPLIT_TRAIN) {
    o = (int64_t)at_rng_below(r, (uint64_t)(t->text_len[0] - T));
  } else {
    int64_t n = t->size[AT_SPLIT_TEST], tiles = t->text_tiles;
    int64_t tile = n == tiles ? i : (int64_t)((unsigned __int128)i * (uint64_t)tiles / (uint64_t)n);
    o = tile * T;
  }
  AT_ASSERT(o >= 0 && o + T < t->text_len[split]);
#define TOKEN(i) (w == 1 ? (int32_t)b[i] : w == 2 ? (int32_t)b16[i] : (int32_t)b32[i])
  for (int64_t p = 0; p < T; p++) tok[p] = TOKEN(o + p), lab[p] = TOKEN(o + p + 1);
#undef TOKEN
}

static const at_task_ops ops = {text_check, text_open, NULL, NULL, text_example};
const at_task_ops *at_text_ops(void) { return &ops; }
