/* core/png.c: the minimal PNG writer (core/png.h). */
#include "core/png.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint32_t at_crc32(uint32_t crc, const unsigned char *p, size_t n) {
  crc = ~crc;
  for (size_t i = 0; i < n; i++) {
    crc ^= p[i];
    for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

uint32_t at_adler32(uint32_t a, const unsigned char *p, size_t n) {
  uint32_t s1 = a & 0xFFFF, s2 = a >> 16;
  for (size_t i = 0; i < n; i++) {
    s1 = (s1 + p[i]) % 65521u;
    s2 = (s2 + s1) % 65521u;
  }
  return (s2 << 16) | s1;
}

static void be32(unsigned char *b, uint32_t v) {
  b[0] = (unsigned char)(v >> 24), b[1] = (unsigned char)(v >> 16), b[2] = (unsigned char)(v >> 8),
  b[3] = (unsigned char)v;
}

/* length, type, data, CRC(type + data) */
static int chunk(FILE *f, const char *type, const unsigned char *data, size_t n) {
  unsigned char len[4], crc[4];
  be32(len, (uint32_t)n);
  uint32_t c = at_crc32(at_crc32(0, (const unsigned char *)type, 4), data, n);
  be32(crc, c);
  return fwrite(len, 1, 4, f) == 4 && fwrite(type, 1, 4, f) == 4 && (n == 0 || fwrite(data, 1, n, f) == n) &&
         fwrite(crc, 1, 4, f) == 4;
}

/* The zlib stream of raw (n bytes) in stored blocks of at most 65535 bytes;
 * its length in *out_n (malloc'ed; NULL when out of memory). */
static unsigned char *zlib_stored(const unsigned char *raw, size_t n, size_t *out_n) {
  size_t blocks = n / 65535 + 1, total = 2 + blocks * 5 + n + 4;
  unsigned char *z = malloc(total), *p = z;
  if (!z) return NULL;
  *p++ = 0x78, *p++ = 0x01; /* deflate, 32K window, no dictionary; (0x78 0x01) % 31 == 0 */
  size_t off = 0;
  do {
    size_t len = n - off < 65535 ? n - off : 65535;
    *p++ = off + len == n; /* BFINAL, BTYPE 00 (stored) */
    p[0] = (unsigned char)len, p[1] = (unsigned char)(len >> 8);
    p[2] = (unsigned char)~len, p[3] = (unsigned char)(~len >> 8);
    p += 4;
    memcpy(p, raw + off, len);
    p += len, off += len;
  } while (off < n);
  be32(p, at_adler32(1, raw, n));
  *out_n = (size_t)(p + 4 - z);
  return z;
}

at_status at_png_write_gray(const char *path, const unsigned char *pix, int64_t w, int64_t h) {
  if (w < 1 || h < 1 || w > (1 << 20) || h > (1 << 20) || w * h > ((int64_t)1 << 28))
    return at_error(AT_E_ARG, "png: image size %lld x %lld out of range", (long long)w, (long long)h);
  size_t row = (size_t)w + 1, n = row * (size_t)h, zn = 0;
  unsigned char *raw = malloc(n);
  if (!raw) return at_error(AT_E_NOMEM, "png: out of memory");
  for (int64_t y = 0; y < h; y++) {
    raw[(size_t)y * row] = 0; /* filter: none */
    memcpy(raw + (size_t)y * row + 1, pix + (size_t)y * (size_t)w, (size_t)w);
  }
  unsigned char *z = zlib_stored(raw, n, &zn);
  free(raw);
  if (!z) return at_error(AT_E_NOMEM, "png: out of memory");
  unsigned char ihdr[13];
  be32(ihdr, (uint32_t)w), be32(ihdr + 4, (uint32_t)h);
  ihdr[8] = 8, ihdr[9] = 0, ihdr[10] = 0, ihdr[11] = 0, ihdr[12] = 0; /* 8-bit gray, deflate, no interlace */
  static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  FILE *f = fopen(path, "wb");
  int ok = f && fwrite(sig, 1, 8, f) == 8 && chunk(f, "IHDR", ihdr, 13) && chunk(f, "IDAT", z, zn) &&
           chunk(f, "IEND", NULL, 0);
  free(z);
  if (f && fclose(f) != 0) ok = 0;
  if (!ok) {
    if (f) remove(path);
    return at_error(AT_E_IO, "png: cannot write %s", path);
  }
  return AT_OK;
}
