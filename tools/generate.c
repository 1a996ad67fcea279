/* tools/generate.c: ./generate CHECKPOINT [--prompt TEXT | --prompt-file F] [--tokens N]
 *     [--temperature T] [--top-k K] [--top-p P] [--seed S] [--task-example I] [--threads N]
 *
 * Rebuilds the run of a checkpoint from the configuration it carries and
 * continues a prompt with every layer's decoding state (models/generate.h):
 * the prompt through the prefill (the mixers' training form), then one step
 * per new token. Text models read the prompt as bytes and print bytes; models
 * of a synthetic task read and print token ids. --task-example I completes
 * held-out example I of the run's task: the example's tokens up to its first
 * labelled position are the prompt, the model fills every labelled position
 * (its own answers are fed back), the example gives the other inputs, and the
 * expected answers are printed beside the model's (greedy unless a
 * temperature is given). The continuation goes to stdout; prefill and decode
 * tokens/s, the decoding state's bytes and the machine go to stderr.
 *
 * Exit status: 0, or 2 for bad usage or a checkpoint that cannot be used. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/threads.h"
#include "data/data.h"
#include "experiments/restore.h"
#include "models/generate.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: generate CHECKPOINT [--prompt TEXT | --prompt-file F] [--tokens N] [--temperature T]\n"
          "                [--top-k K] [--top-p P] [--seed S] [--task-example I] [--threads N]\n"
          "\n"
          "Continues a prompt with the model of a checkpoint (results/<experiment>/checkpoints/<run>.h5).\n"
          "\n"
          "  --prompt TEXT     text models: bytes (default: a newline); synthetic tasks: token ids (\"3 17 5\")\n"
          "  --prompt-file F   the prompt from a file\n"
          "  --tokens N        new tokens (default 256 for text, 16 otherwise)\n"
          "  --temperature T   0 is greedy (default 1; 0 with --task-example)\n"
          "  --top-k K         sample among the K most probable tokens (default 0: all)\n"
          "  --top-p P         ... and among the most probable ones with mass P (default 1: all)\n"
          "  --seed S          the sampling seed (default 0)\n"
          "  --task-example I  complete held-out example I of the run's synthetic task\n"
          "  --threads N       threads (default: the run's train.threads)\n");
}

typedef struct args {
  const char *ckpt, *prompt, *prompt_file;
  long long tokens, top_k, seed, example, threads;
  double temperature, top_p;
  int temperature_given;
} args;

static int number(const char *flag, const char *v, double lo, double hi, double *out) {
  char *end = NULL;
  errno = 0;
  double x = v ? strtod(v, &end) : 0;
  if (!v || !*v || *end || errno || !(x >= lo && x <= hi)) {
    fprintf(stderr, "generate: %s needs a number in [%g, %g]%s%s\n", flag, lo, hi, v ? ", got " : "", v ? v : "");
    return 0;
  }
  *out = x;
  return 1;
}

static int parse(int argc, char **argv, args *a) {
  *a = (args){.tokens = -1, .seed = 0, .example = -1, .threads = -1, .temperature = 1, .top_p = 1};
  for (int i = 1; i < argc; i++) {
    const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    double x;
    if (!strcmp(f, "-h") || !strcmp(f, "--help")) {
      usage(stdout);
      exit(0);
    } else if (!strcmp(f, "--prompt") || !strcmp(f, "--prompt-file")) {
      if (!v) return fprintf(stderr, "generate: %s needs a value\n", f), 0;
      *(f[8] ? &a->prompt_file : &a->prompt) = v, i++;
    } else if (!strcmp(f, "--temperature")) {
      if (!number(f, v, 0, 1e6, &a->temperature)) return 0;
      a->temperature_given = 1, i++;
    } else if (!strcmp(f, "--top-p")) {
      if (!number(f, v, 1e-9, 1, &a->top_p)) return 0;
      i++;
    } else if (!strcmp(f, "--tokens") || !strcmp(f, "--top-k") || !strcmp(f, "--seed") ||
               !strcmp(f, "--task-example") || !strcmp(f, "--threads")) {
      if (!number(f, v, 0, 9e15, &x) || x != (double)(long long)x) {
        if (v) fprintf(stderr, "generate: %s needs a whole number\n", f);
        return 0;
      }
      long long n = (long long)x;
      if (!strcmp(f, "--tokens")) a->tokens = n;
      else if (!strcmp(f, "--top-k")) a->top_k = n;
      else if (!strcmp(f, "--seed")) a->seed = n;
      else if (!strcmp(f, "--threads")) a->threads = n;
      else a->example = n;
      i++;
    } else if (f[0] == '-') {
      fprintf(stderr, "generate: unknown option %s\n", f);
      return 0;
    } else if (a->ckpt) {
      fprintf(stderr, "generate: one checkpoint at a time (got %s and %s)\n", a->ckpt, f);
      return 0;
    } else {
      a->ckpt = f;
    }
  }
  if (!a->ckpt) return usage(stderr), 0;
  if (a->prompt && a->prompt_file) return fprintf(stderr, "generate: --prompt or --prompt-file, not both\n"), 0;
  if (a->example >= 0 && (a->prompt || a->prompt_file))
    return fprintf(stderr, "generate: --task-example brings its own prompt (drop --prompt)\n"), 0;
  return 1;
}

/* The prompt's text (malloc'ed, *n bytes). */
static char *prompt_text(const args *a, size_t *n) {
  if (!a->prompt_file) {
    const char *p = a->prompt ? a->prompt : "\n";
    *n = strlen(p);
    return strdup(p);
  }
  FILE *f = fopen(a->prompt_file, "rb");
  if (!f) {
    fprintf(stderr, "generate: %s: %s\n", a->prompt_file, strerror(errno));
    return NULL;
  }
  size_t cap = 4096, len = 0, got;
  char *buf = malloc(cap + 1);
  while (buf && (got = fread(buf + len, 1, cap - len, f)) > 0)
    if ((len += got) == cap) {
      char *nb = realloc(buf, 2 * cap + 1);
      if (!nb) free(buf);
      buf = nb, cap *= 2;
    }
  fclose(f);
  if (buf) buf[len] = 0;
  *n = len;
  return buf;
}

/* Prompt tokens: bytes for text, else whitespace- or comma-separated ids
 * below V. NULL with a message. */
static int32_t *prompt_tokens(const args *a, int text, int64_t V, int64_t *n) {
  size_t len;
  char *s = prompt_text(a, &len);
  if (!s) return NULL;
  int32_t *tok = malloc((len + 1) * sizeof *tok);
  *n = 0;
  if (text) {
    for (size_t i = 0; tok && i < len; i++) tok[(*n)++] = (unsigned char)s[i];
  } else {
    for (char *p = s, *end; tok && *p;) {
      if (strchr(" \t\n\r,", *p)) {
        p++;
        continue;
      }
      long v = strtol(p, &end, 10);
      if (end == p || v < 0 || v >= V) {
        fprintf(stderr, "generate: the prompt must be token ids in 0 .. %lld (at \"%.20s\")\n", (long long)V - 1, p);
        free(tok), tok = NULL;
        break;
      }
      tok[(*n)++] = (int32_t)v, p = end;
    }
  }
  free(s);
  if (tok && *n == 0) {
    fprintf(stderr, "generate: the prompt is empty\n");
    free(tok), tok = NULL;
  }
  return tok;
}

static void print_stats(const at_gen_stats *g, const at_model *m) {
  char machine[512];
  at_machine_line(machine, sizeof machine);
  fprintf(stderr,
          "\n[generate] prefill %lld tokens in %.1f ms (%.0f tokens/s); decode %lld tokens in %.1f ms (%.0f tokens/s)\n"
          "[generate] decoding state %lld bytes: cache %lld bytes per token of context + %lld bytes of fixed state\n"
          "[generate] %s\n",
          (long long)g->prompt_tokens, 1e3 * g->prefill_seconds, g->prompt_tokens / g->prefill_seconds,
          (long long)g->steps, 1e3 * g->decode_seconds, g->steps ? g->steps / g->decode_seconds : 0.0,
          (long long)g->state_bytes,
          (long long)(sizeof(real) * at_model_cache_per_token(m)), (long long)(sizeof(real) * at_model_state_elems(m)),
          machine);
}

/* Free generation from the prompt; prints the continuation. */
static int continue_prompt(const args *a, const at_restored *r, unsigned stage) {
  int text = r->rc->data.kind == AT_TASK_TEXT;
  int64_t V = r->m->cfg.vocab_size, n_prompt, n_new = a->tokens >= 0 ? a->tokens : text ? 256 : 16;
  if (!text && !a->prompt && !a->prompt_file) {
    fprintf(stderr, "generate: a model of task %s needs --prompt (token ids) or --task-example I\n",
            at_task_name(r->rc->data.kind));
    return 2;
  }
  int32_t *prompt = prompt_tokens(a, text, V, &n_prompt), *out = malloc((size_t)AT_MAX(n_new, 1) * sizeof *out);
  at_ctx *c = at_ctx_new(0);
  at_decoder *d = NULL;
  at_sampler s = {0};
  at_gen_stats g;
  at_status st = prompt && out && c ? AT_OK : AT_E_ARG;
  if (st == AT_OK) st = at_decoder_new(r->m, 1, AT_MAX(n_prompt + n_new - 1, 1), stage, &d);
  if (st == AT_OK) st = at_sampler_init(&s, V, &(at_sample_opts){a->temperature, a->top_k, a->top_p}, (uint64_t)a->seed);
  if (st == AT_OK) st = at_generate(c, d, prompt, n_prompt, n_new, &s, out, &g);
  if (st == AT_OK) {
    for (int64_t i = 0; i < n_new; i++) {
      if (text) putchar(out[i]);
      else printf("%s%d", i ? " " : "", out[i]);
    }
    if (!text) putchar('\n');
    fflush(stdout);
    print_stats(&g, r->m);
  } else if (prompt && out) {
    fprintf(stderr, "generate: %s\n", at_errmsg());
  }
  at_sampler_free(&s);
  at_decoder_free(d);
  at_ctx_free(c);
  free(prompt), free(out);
  return st == AT_OK ? 0 : 2;
}

/* Completes held-out example a->example; prints expected and produced answers. */
static int complete_example(const args *a, const at_restored *r, unsigned stage) {
  const at_task_cfg *dc = &r->rc->data;
  if (dc->kind == AT_TASK_TEXT) {
    fprintf(stderr, "generate: --task-example is for synthetic tasks; give a text model a --prompt\n");
    return 2;
  }
  at_task *task = NULL;
  if (at_task_open(dc, &task) != AT_OK) {
    fprintf(stderr, "generate: %s\n", at_errmsg());
    return 2;
  }
  int64_t T = dc->seq_len, n_test = at_task_size(task, AT_SPLIT_TEST);
  if (a->example >= n_test) {
    fprintf(stderr, "generate: --task-example %lld: the test split has %lld examples\n", a->example, (long long)n_test);
    at_task_free(task);
    return 2;
  }
  int32_t *tok = malloc((size_t)T * sizeof *tok), *lab = malloc((size_t)T * sizeof *lab);
  at_task_batch(task, AT_SPLIT_TEST, a->example, 1, tok, lab, NULL);
  int64_t p0 = 0;
  while (p0 < T && lab[p0] == AT_IGNORE_LABEL) p0++;
  at_ctx *c = at_ctx_new(0);
  at_decoder *d = NULL;
  at_sampler s = {0};
  at_status st = p0 < T ? at_decoder_new(r->m, 1, T, stage, &d) : at_error(AT_E_ARG, "example %lld has no labelled position", a->example);
  if (st == AT_OK) st = at_sampler_init(&s, r->m->cfg.vocab_size, &(at_sample_opts){a->temperature_given ? a->temperature : 0, a->top_k, a->top_p},
                                        (uint64_t)a->seed);
  int64_t n_lab = 0, n_ok = 0;
  at_gen_stats g = {.prompt_tokens = p0 + 1};
  if (st == AT_OK) {
    printf("task %s, test example %lld, %lld tokens; the model fills the labelled positions\nprompt:",
           at_task_name(dc->kind), a->example, (long long)T);
    for (int64_t t = 0; t <= p0; t++) printf(" %d", tok[t]);
    printf("\nposition expected model\n");
    at_itensor *in = at_inew(c, AT_SHAPE(1, p0 + 1));
    memcpy(in->data, tok, (size_t)(p0 + 1) * sizeof *tok);
    at_ctx_mark mk = at_ctx_get_mark(c);
    double t0 = at_now();
    at_tensor *z = at_decoder_prefill(c, d, in, 0);
    g.prefill_seconds = at_now() - t0;
    t0 = at_now();
    for (int64_t t = p0; z; t++) { /* z: the logits at position t */
      int32_t next = t + 1 < T ? tok[t + 1] : -1;
      if (lab[t] != AT_IGNORE_LABEL) {
        next = at_sample(&s, z->data);
        n_lab++, n_ok += next == lab[t];
        printf("%8lld %8d %5d%s\n", (long long)t, lab[t], next, next == lab[t] ? "" : "  x");
      }
      at_ctx_rewind(c, mk);
      if (t + 1 >= T) break;
      at_itensor *one = at_inew(c, AT_SHAPE(1, 1));
      one->data[0] = next;
      z = at_decoder_step(c, d, one);
      g.steps++;
    }
    g.decode_seconds = at_now() - t0;
    st = at_ctx_status(c);
  }
  if (st == AT_OK) {
    printf("correct %lld of %lld labelled positions\n", (long long)n_ok, (long long)n_lab);
    g.state_bytes = at_decoder_state_bytes(d);
    print_stats(&g, r->m);
  } else {
    fprintf(stderr, "generate: %s\n", at_errmsg());
  }
  at_sampler_free(&s);
  at_decoder_free(d);
  at_ctx_free(c);
  at_task_free(task);
  free(tok), free(lab);
  return st == AT_OK ? 0 : 2;
}

int main(int argc, char **argv) {
  args a;
  if (!parse(argc, argv, &a)) return 2;
  at_restored r;
  if (at_restore(a.ckpt, &r) != AT_OK) {
    fprintf(stderr, "generate: %s\n", at_errmsg());
    return 2;
  }
  at_set_threads(a.threads >= 0 ? (int)a.threads : r.rc->train.threads);
  /* decode as the run last trained: sparse if its last stage was */
  const at_train_cfg *tc = &r.rc->train;
  unsigned stage = tc->n_stages > 0 && tc->stages[tc->n_stages - 1].sparse ? AT_STAGE_SPARSE : 0;
  fprintf(stderr, "[generate] %s: run %s of %s, step %lld, %lld parameters\n", a.ckpt, r.rc->name, r.e->name,
          (long long)r.ts.step, (long long)at_model_num_params(r.m));
  int rc = a.example >= 0 ? complete_example(&a, &r, stage) : continue_prompt(&a, &r, stage);
  at_restored_free(&r);
  return rc;
}
