/* core/base.h: the number type, status codes and assertions every file uses.
 *
 * `real` is float in the training library (attnlab) and double in the
 * gradient-check library (attnlab_d, built with AT_DOUBLE). In the double
 * build every global at_* symbol is renamed atd_* by a generated header, so
 * one program can link both libraries and compare them.
 */
#ifndef AT_BASE_H
#define AT_BASE_H

#include <stddef.h>
#include <stdint.h>

#ifdef AT_DOUBLE
#include "at_double_names.h"
typedef double real;
#define AT_REAL_NAME "double"
#else
typedef float real;
#define AT_REAL_NAME "float"
#endif

/* Status codes for everything a user can get wrong. Functions that can fail
 * on user input return one and leave a message in at_errmsg(). Internal
 * invariants are AT_ASSERTs instead. */
typedef enum at_status {
  AT_OK = 0,
  AT_E_ARG,      /* an argument or option is out of range */
  AT_E_SHAPE,    /* tensor shapes do not fit together */
  AT_E_NOMEM,    /* an allocation failed */
  AT_E_IO,       /* a file cannot be opened, read or written */
  AT_E_FORMAT,   /* a file's contents are not what was expected */
  AT_E_CONFIG,   /* an experiment file is invalid */
  AT_E_NUMERIC,  /* a NaN or Inf where a finite number is required */
  AT_E_STATE,    /* a call out of order (e.g. backward without a forward) */
  AT_STATUS_COUNT
} at_status;

const char *at_status_name(at_status s);

/* Sets this thread's error message (printf-style) and returns `s`. */
at_status at_error(at_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefixes the current message with more context ("loading x.h5: ..."). */
at_status at_error_prefix(at_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *at_errmsg(void);
void at_error_clear(void);

/* Programmer errors: on in every build type. */
_Noreturn void at_assert_fail(const char *expr, const char *file, int line, const char *msg);
#define AT_ASSERT(cond) \
  do { if (!(cond)) at_assert_fail(#cond, __FILE__, __LINE__, NULL); } while (0)
#define AT_ASSERT_MSG(cond, msg) \
  do { if (!(cond)) at_assert_fail(#cond, __FILE__, __LINE__, (msg)); } while (0)

/* The label of positions that are not scored (loss and accuracy skip them). */
#define AT_IGNORE_LABEL (-100)

#define AT_MIN(a, b) ((a) < (b) ? (a) : (b))
#define AT_MAX(a, b) ((a) > (b) ? (a) : (b))
#define AT_ARRAY_LEN(a) ((int)(sizeof(a) / sizeof((a)[0])))

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

#endif
