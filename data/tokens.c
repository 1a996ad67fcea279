/* data/tokens.c: pre-tokenized corpora (`data.path` naming a *.bin file of
 * the `text` task).
 *
 * Two layouts, told apart by the first 32-bit word:
 *   - llm.c's (dev/data/data_common.py): a header of 256 little-endian
 *     int32, [0] the magic, [1] the version, [2] the number of tokens N,
 *     the rest 0; then N tokens. Magic 20240520 / version 1: GPT-2 tokens
 *     as uint16 (vocabulary 50257); 20240801 / version 7: Llama-3 tokens as
 *     uint32 (vocabulary 128256). 20240522 is llm.c's evaluation format
 *     (HellaSwag, MMLU), refused.
 *   - nanoGPT's (data/<dataset>/prepare.py, np.uint16 tofile): little-endian
 *     uint16 tokens, nothing else. The file does not say its vocabulary:
 *     data.vocab_size must be given.
 * The vocabulary is the file's (llm.c) unless data.vocab_size gives one;
 * every token must be below it. The file's size must be exactly what the
 * header declares (llm.c) or an even number of bytes (nanoGPT). Refusals
 * name the file and what is wrong with it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/internal.h"

#define LLMC_HEADER_BYTES 1024
#define LLMC_MAGIC_GPT2 20240520
#define LLMC_MAGIC_LLAMA3 20240801
#define LLMC_MAGIC_EVAL 20240522

static uint32_t le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int at_is_token_file(const char *path) {
  size_t n = strlen(path);
  struct stat st;
  return n > 4 && strcmp(path + n - 4, ".bin") == 0 && stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Reads the header (llm.c) and checks the size against it. */
at_status at_token_file_probe(const char *path, at_token_file *tf) {
  memset(tf, 0, sizeof *tf);
  FILE *f = fopen(path, "rb");
  if (!f) return at_error(AT_E_IO, "text: cannot open token file '%s' (%s)", path, strerror(errno));
  struct stat st;
  uint8_t h[LLMC_HEADER_BYTES];
  int ok = fstat(fileno(f), &st) == 0;
  size_t got = ok ? fread(h, 1, sizeof h, f) : 0;
  int err = ferror(f);
  fclose(f);
  if (!ok || err) return at_error(AT_E_IO, "text: cannot read token file '%s'", path);
  int64_t size = (int64_t)st.st_size;
  uint32_t magic = got >= 4 ? le32(h) : 0;
  if (magic == LLMC_MAGIC_EVAL)
    return at_error(AT_E_FORMAT, "text: '%s' is an llm.c evaluation file (magic %u), not training tokens", path, magic);
  if (magic == LLMC_MAGIC_GPT2 || magic == LLMC_MAGIC_LLAMA3) {
    int gpt2 = magic == LLMC_MAGIC_GPT2;
    uint32_t version = got >= 8 ? le32(h + 4) : 0, want = gpt2 ? 1 : 7;
    if (got < sizeof h)
      return at_error(AT_E_FORMAT, "text: '%s' is shorter (%lld bytes) than llm.c's %d-byte header", path,
                      (long long)size, LLMC_HEADER_BYTES);
    if (version != want)
      return at_error(AT_E_FORMAT, "text: '%s': llm.c magic %u with version %u (this format is version %u)", path,
                      magic, version, want);
    int32_t n = (int32_t)le32(h + 8);
    tf->width = gpt2 ? 2 : 4;
    if (n < 0 || (int64_t)LLMC_HEADER_BYTES + (int64_t)n * tf->width != size)
      return at_error(AT_E_FORMAT,
                      "text: '%s': the llm.c header declares %d tokens (%lld bytes with the header) but the file "
                      "has %lld bytes (truncated or damaged)", path, n,
                      (long long)LLMC_HEADER_BYTES + (long long)n * tf->width, (long long)size);
    tf->offset = LLMC_HEADER_BYTES;
    tf->n = n;
    tf->vocab = gpt2 ? 50257 : 128256;
    tf->format = gpt2 ? "llm.c GPT-2 uint16" : "llm.c Llama-3 uint32";
    return AT_OK;
  }
  if (size % 2)
    return at_error(AT_E_FORMAT,
                    "text: '%s' has no llm.c header and an odd size (%lld bytes), so it is not nanoGPT's uint16 "
                    "tokens either", path, (long long)size);
  tf->width = 2;
  tf->n = size / 2;
  tf->vocab = 0; /* unknown */
  tf->format = "nanoGPT uint16";
  return AT_OK;
}

/* Reads every token, checking each against `vocab`; stores them in dst
 * (tf->n tokens of tf->width bytes, native order) unless dst is NULL. */
at_status at_token_file_read(const char *path, const at_token_file *tf, int64_t vocab, void *dst) {
  FILE *f = fopen(path, "rb");
  if (!f) return at_error(AT_E_IO, "text: cannot open token file '%s' (%s)", path, strerror(errno));
  uint8_t buf[1 << 15];
  at_status st = AT_OK;
  int64_t i = 0;
  if (fseek(f, (long)tf->offset, SEEK_SET) != 0) st = at_error(AT_E_IO, "text: cannot read '%s'", path);
  while (st == AT_OK && i < tf->n) {
    size_t want = (size_t)AT_MIN((int64_t)sizeof buf / tf->width, tf->n - i);
    if (fread(buf, (size_t)tf->width, want, f) != want) {
      st = at_error(AT_E_IO, "text: '%s' could not be read whole, or changed while being read", path);
      break;
    }
    for (size_t k = 0; k < want; k++, i++) {
      uint32_t tok = tf->width == 2 ? (uint32_t)buf[2 * k] | (uint32_t)buf[2 * k + 1] << 8 : le32(buf + 4 * k);
      if ((int64_t)tok >= vocab) {
        st = at_error(AT_E_FORMAT, "text: '%s' (%s): token %u at position %lld is not below vocab_size %lld%s", path,
                      tf->format, tok, (long long)i, (long long)vocab,
                      tf->vocab ? "" : " (a raw token file: give data.vocab_size, e.g. 50304 for GPT-2)");
        break;
      }
      if (!dst) continue;
      if (tf->width == 2) ((uint16_t *)dst)[i] = (uint16_t)tok;
      else ((uint32_t *)dst)[i] = tok;
    }
  }
  if (st == AT_OK && fgetc(f) != EOF) st = at_error(AT_E_IO, "text: '%s' changed while being read", path);
  fclose(f);
  return st;
}
