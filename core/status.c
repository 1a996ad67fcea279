/* core/status.c: per-thread error messages. */
#include "core/base.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AT_ERRMSG_LEN 2048
static _Thread_local char errmsg[AT_ERRMSG_LEN];

static const char *const status_names[AT_STATUS_COUNT] = {
  [AT_OK] = "ok",
  [AT_E_ARG] = "invalid argument",
  [AT_E_SHAPE] = "shape mismatch",
  [AT_E_NOMEM] = "out of memory",
  [AT_E_IO] = "i/o error",
  [AT_E_FORMAT] = "bad file format",
  [AT_E_CONFIG] = "invalid configuration",
  [AT_E_NUMERIC] = "non-finite number",
  [AT_E_STATE] = "invalid state",
};

const char *at_status_name(at_status s) {
  if ((int)s < 0 || s >= AT_STATUS_COUNT) return "unknown status";
  return status_names[s];
}

at_status at_error(at_status s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errmsg, sizeof errmsg, fmt, ap);
  va_end(ap);
  return s;
}

at_status at_error_prefix(at_status s, const char *fmt, ...) {
  char old[AT_ERRMSG_LEN];
  memcpy(old, errmsg, sizeof old);
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(errmsg, sizeof errmsg, fmt, ap);
  va_end(ap);
  if (n >= 0 && (size_t)n < sizeof errmsg) {
    size_t room = sizeof errmsg - (size_t)n;
    size_t len = strlen(old);
    if (room > 2) {
      memcpy(errmsg + n, ": ", 2);
      n += 2, room -= 2;
      if (len >= room) len = room - 1;
      memcpy(errmsg + n, old, len);
      errmsg[n + len] = '\0';
    }
  }
  return s;
}

const char *at_errmsg(void) { return errmsg; }

void at_error_clear(void) { errmsg[0] = '\0'; }

_Noreturn void at_assert_fail(const char *expr, const char *file, int line, const char *msg) {
  fprintf(stderr, "attnlab: internal error at %s:%d: assertion `%s' failed%s%s\n", file, line,
          expr, msg ? ": " : "", msg ? msg : "");
  abort();
}
