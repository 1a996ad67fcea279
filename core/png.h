/* core/png.h: a minimal PNG writer (8-bit grayscale, no library): the image
 * data in zlib "stored" (uncompressed) deflate blocks with its Adler-32, every
 * chunk with its CRC-32 (ISO 3309 / ITU-T V.42, as PNG specifies). Images
 * are small visualisations (attention masks), so no compression is needed. */
#ifndef AT_PNG_H
#define AT_PNG_H

#include "core/base.h"

/* CRC-32 (polynomial 0xEDB88320, reflected, init and final xor 0xFFFFFFFF)
 * of n bytes continuing from crc (0 to start). */
uint32_t at_crc32(uint32_t crc, const unsigned char *p, size_t n);
/* Adler-32 of n bytes continuing from a (1 to start). */
uint32_t at_adler32(uint32_t a, const unsigned char *p, size_t n);

/* Writes the w x h grayscale image pix (row-major, 0 black .. 255 white) to
 * path; AT_E_ARG for empty or too large sizes, AT_E_IO with a message when
 * the file cannot be written. */
at_status at_png_write_gray(const char *path, const unsigned char *pix, int64_t w, int64_t h);

#endif
