/* core/h5io.c: checked wrappers over the HDF5 C API; the seal, the checks
 * made before HDF5 parses or we allocate, and the child-process guard (see
 * h5io.h). */
#define _GNU_SOURCE
#include "core/h5io.h"
#include "core/threads.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <inttypes.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

struct at_h5 {
  hid_t fid;
  int writable;
  char path[1024];
  char tmp[1300];
};

static void quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

#ifdef AT_DOUBLE
#define H5_REAL H5T_NATIVE_DOUBLE
#define H5_REAL_FILE H5T_IEEE_F64LE
#else
#define H5_REAL H5T_NATIVE_FLOAT
#define H5_REAL_FILE H5T_IEEE_F32LE
#endif

const char *at_h5_path(const at_h5 *h) { return h->path; }

/* ---- the seal ------------------------------------------------------------------
 * A 64-bit hash of the bytes after the user block, 8 bytes at a time; each
 * step is a bijection of the running value, so any single changed word
 * changes the result. */

#define SEAL_MAGIC "attnlab-sealed-hdf5 1\n"
static const unsigned char hdf5_sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

static uint64_t seal_step(uint64_t h, uint64_t w) {
  h ^= w * 0x9e3779b97f4a7c15ull;
  h = (h << 29) | (h >> 35);
  return h * 0xbf58476d1ce4e5b9ull + 0x94d049bb133111ebull;
}

/* The hash of bytes [from, size) of fd; -1 on a read error. */
static int hash_file(int fd, int64_t from, int64_t size, uint64_t *out) {
  static unsigned char buf[1 << 16];
  uint64_t h = 0x6174746e6c616273ull ^ (uint64_t)(size - from);
  for (int64_t off = from; off < size;) {
    size_t want = (size_t)AT_MIN((int64_t)sizeof buf, size - off);
    ssize_t got = pread(fd, buf, want, off);
    if (got <= 0) return -1;
    size_t n = (size_t)got, i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      memcpy(&w, buf + i, 8);
      h = seal_step(h, w);
    }
    if (i < n) { /* a partial last word, padded with zeros (the length is hashed too) */
      uint64_t w = 0;
      memcpy(&w, buf + i, n - i);
      h = seal_step(h, w);
    }
    off += (int64_t)n;
  }
  *out = h;
  return 0;
}

/* Parses "attnlab-sealed-hdf5 1\nlength N\nhash H\n" followed by NULs. */
static int parse_seal(const unsigned char *b, int64_t *length, uint64_t *hash) {
  char text[AT_H5_SEAL_BYTES + 1];
  memcpy(text, b, AT_H5_SEAL_BYTES);
  text[AT_H5_SEAL_BYTES] = '\0';
  size_t used = strlen(text);
  for (size_t i = used; i < AT_H5_SEAL_BYTES; i++)
    if (b[i]) return 0;
  long long len;
  unsigned long long hv;
  int consumed = 0;
  if (sscanf(text, SEAL_MAGIC "length %lld\nhash %16llx\n%n", &len, &hv, &consumed) != 2 ||
      (size_t)consumed != used || len < AT_H5_SEAL_BYTES)
    return 0;
  char canon[AT_H5_SEAL_BYTES];
  snprintf(canon, sizeof canon, SEAL_MAGIC "length %lld\nhash %016llx\n", len, hv);
  if (strcmp(canon, text) != 0) return 0; /* one spelling only: no leading zeros, no sign */
  *length = len, *hash = hv;
  return 1;
}

/* Seals the closed file `tmp` (to become `path`): writes the user block and fsyncs. */
static at_status seal(const char *path, const char *tmp) {
  int fd = open(tmp, O_RDWR);
  if (fd < 0) return at_error(AT_E_IO, "%s: cannot reopen %s to seal it (%s)", path, tmp, strerror(errno));
  struct stat st;
  at_status s = AT_OK;
  unsigned char head[AT_H5_SEAL_BYTES + 8];
  uint64_t h;
  if (fstat(fd, &st) != 0 || pread(fd, head, sizeof head, 0) != (ssize_t)sizeof head ||
      memcmp(head + AT_H5_SEAL_BYTES, hdf5_sig, 8) != 0)
    s = at_error(AT_E_IO, "%s: the file written is incomplete (disk full?)", path);
  else if (hash_file(fd, AT_H5_SEAL_BYTES, (int64_t)st.st_size, &h) != 0)
    s = at_error(AT_E_IO, "%s: cannot read back %s (%s)", path, tmp, strerror(errno));
  if (s == AT_OK) {
    char block[AT_H5_SEAL_BYTES] = {0};
    snprintf(block, sizeof block, SEAL_MAGIC "length %lld\nhash %016llx\n", (long long)st.st_size,
             (unsigned long long)h);
    if (pwrite(fd, block, sizeof block, 0) != (ssize_t)sizeof block || fsync(fd) != 0)
      s = at_error(AT_E_IO, "%s: cannot write %s (%s)", path, tmp, strerror(errno));
  }
  if (close(fd) != 0 && s == AT_OK) s = at_error(AT_E_IO, "%s: cannot write %s (%s)", path, tmp, strerror(errno));
  return s;
}

at_status at_h5_seal(const char *path) { return seal(path, path); }

/* fsync of the directory holding `path`, so that a rename survives a crash. */
static at_status sync_dir(const char *path) {
  char buf[1024];
  snprintf(buf, sizeof buf, "%s", path);
  int fd = open(dirname(buf), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return at_error(AT_E_IO, "%s: cannot open its directory (%s)", path, strerror(errno));
  int r = fsync(fd);
  close(fd);
  if (r != 0 && errno != EINVAL) return at_error(AT_E_IO, "%s: cannot sync its directory (%s)", path, strerror(errno));
  return AT_OK;
}

/* This machine's name as the temporary files carry it ("host" if unknown). */
static void host_name(char *buf, size_t n) {
  if (gethostname(buf, n) != 0 || !buf[0]) snprintf(buf, n, "host");
  buf[n - 1] = 0;
  for (char *p = buf; *p; p++)
    if (*p == '/') *p = '_';
}

void at_h5_tmp_name(const char *path, char *buf, size_t n) {
  char host[256];
  host_name(host, sizeof host);
  snprintf(buf, n, "%s.tmp.%s.%ld", path, host, (long)getpid());
}

/* Removes "<path>.tmp.<host>.<pid>" files of this host left by writers that
 * died (no process <pid> exists): a killed writer's temporary file is not
 * left forever. Another host's files are left alone (its pids are not ours
 * to test, on a file system that several machines share). */
static void remove_stale_tmps(const char *path) {
  char dbuf[1024], bbuf[1024], host[256], name[1400], full[2200];
  snprintf(dbuf, sizeof dbuf, "%s", path), snprintf(bbuf, sizeof bbuf, "%s", path);
  host_name(host, sizeof host);
  const char *dir = dirname(dbuf);
  int nb = snprintf(name, sizeof name, "%s.tmp.%s.", basename(bbuf), host);
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    char *end;
    if (strncmp(e->d_name, name, (size_t)nb) != 0) continue;
    long pid = strtol(e->d_name + nb, &end, 10);
    if (*end || pid <= 0 || pid == (long)getpid() || kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
    snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
    unlink(full);
  }
  closedir(d);
}

/* ---- what is checked before HDF5 parses a file ------------------------------------- */

static uint64_t le(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

/* The superblock at `base`: 8-byte offsets and lengths, base address
 * `base`, end-of-file address the file's size. */
static at_status check_superblock(const char *path, int fd, int64_t base, int64_t size) {
  unsigned char sb[96];
  if (size < base + (int64_t)sizeof sb || pread(fd, sb, sizeof sb, base) != (ssize_t)sizeof sb)
    return at_error(AT_E_FORMAT, "%s: truncated HDF5 file (%lld bytes)", path, (long long)size);
  int version = sb[8], so, sl;
  const unsigned char *addr; /* the base address; the end-of-file address is 16 bytes after it */
  int64_t eof;
  if (version == 0 || version == 1) {
    so = sb[13], sl = sb[14];
    addr = sb + 24 + (version == 1 ? 4 : 0);
    eof = (int64_t)le(addr + 16, 8);
  } else if (version == 2 || version == 3) {
    so = sb[9], sl = sb[10];
    addr = sb + 12;
    eof = (int64_t)le(addr + 16, 8);
  } else {
    return at_error(AT_E_FORMAT, "%s: HDF5 superblock version %d is not one attnlab reads", path, version);
  }
  if (so != 8 || sl != 8)
    return at_error(AT_E_FORMAT, "%s: HDF5 file with %d-byte offsets and %d-byte lengths (attnlab reads 8 and 8)", path, so, sl);
  if ((int64_t)le(addr, 8) != base)
    return at_error(AT_E_FORMAT, "%s: the HDF5 superblock's base address %llu is not where it is (%lld)", path,
                    (unsigned long long)le(addr, 8), (long long)base);
  /* HDF5 stores the end of file as an absolute address, user block included */
  if (eof != size)
    return at_error(AT_E_FORMAT, "%s: the HDF5 superblock declares %llu bytes but the file has %lld (%s)", path,
                    (unsigned long long)eof, (long long)size, (uint64_t)eof > (uint64_t)size ? "truncated" : "extended");
  return AT_OK;
}

/* A regular file; its seal if it has one; the superblock. */
static at_status check_file(const char *path) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) return at_error(AT_E_IO, "%s: cannot open for reading (%s)", path, strerror(errno));
  struct stat st;
  unsigned char head[AT_H5_SEAL_BYTES];
  at_status s = AT_OK;
  int64_t size = 0, base = 0;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    s = at_error(AT_E_IO, "%s: not a regular file", path);
    goto done;
  }
  size = (int64_t)st.st_size;
  ssize_t got = pread(fd, head, sizeof head, 0);
  if (got < 0) {
    s = at_error(AT_E_IO, "%s: cannot read (%s)", path, strerror(errno));
    goto done;
  }
  if (got >= 8 && memcmp(head, hdf5_sig, 8) == 0) goto superblock; /* not sealed */
  if (got < (ssize_t)strlen(SEAL_MAGIC) || memcmp(head, SEAL_MAGIC, strlen(SEAL_MAGIC)) != 0) {
    s = at_error(AT_E_FORMAT, "%s: not an HDF5 file", path);
    goto done;
  }
  int64_t len;
  uint64_t want, have;
  if (got < AT_H5_SEAL_BYTES || !parse_seal(head, &len, &want)) {
    s = at_error(AT_E_FORMAT, "%s: damaged attnlab seal (the first %d bytes)", path, AT_H5_SEAL_BYTES);
  } else if (len != size) {
    s = at_error(AT_E_FORMAT, "%s: the seal says %lld bytes but the file has %lld (%s)", path, (long long)len,
                 (long long)size, size < len ? "truncated" : "extended");
  } else if (hash_file(fd, AT_H5_SEAL_BYTES, size, &have) != 0) {
    s = at_error(AT_E_IO, "%s: cannot read (%s)", path, strerror(errno));
  } else if (have != want) {
    s = at_error(AT_E_FORMAT, "%s: checksum mismatch: the file is damaged (changed since it was written)", path);
  }
  if (s != AT_OK) goto done;
  base = AT_H5_SEAL_BYTES;
superblock:
  s = check_superblock(path, fd, base, size);
done:
  close(fd);
  return s;
}

int at_h5_sealed(const char *path) {
  char head[sizeof SEAL_MAGIC - 1];
  int fd = open(path, O_RDONLY);
  if (fd < 0) return 0;
  ssize_t got = read(fd, head, sizeof head);
  close(fd);
  return got == (ssize_t)sizeof head && memcmp(head, SEAL_MAGIC, sizeof head) == 0;
}

/* ---- opening, creating, committing ------------------------------------------------ */

at_status at_h5_open(const char *path, at_h5 **out) {
  quiet();
  *out = NULL;
  at_status s = check_file(path);
  if (s != AT_OK) return s;
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
  hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, fapl);
  H5Pclose(fapl);
  if (fid < 0) return at_error(AT_E_FORMAT, "%s: HDF5 cannot open it (corrupt or truncated?)", path);
  at_h5 *h = calloc(1, sizeof *h);
  if (!h) {
    H5Fclose(fid);
    return at_error(AT_E_NOMEM, "out of memory");
  }
  h->fid = fid;
  snprintf(h->path, sizeof h->path, "%s", path);
  *out = h;
  return AT_OK;
}

at_status at_h5_create(const char *path, at_h5 **out) {
  quiet();
  *out = NULL;
  at_h5 *h = calloc(1, sizeof *h);
  if (!h) return at_error(AT_E_NOMEM, "out of memory");
  snprintf(h->path, sizeof h->path, "%s", path);
  at_h5_tmp_name(path, h->tmp, sizeof h->tmp); /* one per writer: see h5io.h */
  remove_stale_tmps(path);
  hid_t fcpl = H5Pcreate(H5P_FILE_CREATE), fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_userblock(fcpl, AT_H5_SEAL_BYTES);
  H5Pset_fclose_degree(fapl, H5F_CLOSE_SEMI); /* closing with an object open is an error, not a deferral */
  h->fid = H5Fcreate(h->tmp, H5F_ACC_TRUNC, fcpl, fapl);
  H5Pclose(fcpl);
  H5Pclose(fapl);
  if (h->fid < 0) {
    free(h);
    return at_error(AT_E_IO, "%s: cannot create (is the directory writable?)", path);
  }
  h->writable = 1;
  *out = h;
  return AT_OK;
}

at_status at_h5_commit(at_h5 *h) {
  AT_ASSERT(h->writable);
  at_status st = AT_OK;
  if (H5Fclose(h->fid) < 0) st = at_error(AT_E_IO, "%s: cannot write %s (disk full?)", h->path, h->tmp);
  if (st == AT_OK) st = seal(h->path, h->tmp);
  if (st == AT_OK && rename(h->tmp, h->path) != 0)
    st = at_error(AT_E_IO, "%s: cannot rename %s into place (%s)", h->path, h->tmp, strerror(errno));
  if (st == AT_OK) st = sync_dir(h->path);
  else remove(h->tmp);
  free(h);
  return st;
}

void at_h5_close(at_h5 *h) {
  if (!h) return;
  H5Fclose(h->fid);
  if (h->writable) remove(h->tmp);
  free(h);
}

/* ---- the guard ---------------------------------------------------------------------- */

/* Bytes of address space this process maps now (the child's limit is on top). */
static uint64_t mapped_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  unsigned long long pages = 0;
  if (f) {
    if (fscanf(f, "%llu", &pages) != 1) pages = 0;
    fclose(f);
  }
  return (uint64_t)pages * (uint64_t)sysconf(_SC_PAGESIZE);
}

typedef struct guard_report {
  at_status status;
  char msg[1024];
} guard_report;

/* Fuzzing: libFuzzer's coverage counters (present only in a -fsanitize=fuzzer
 * build). The child sends its counters to the parent, which adds them to
 * its own, so that what the reader did in the child guides the fuzzer. */
extern unsigned char __start___sancov_cntrs[] __attribute__((weak));
extern unsigned char __stop___sancov_cntrs[] __attribute__((weak));

static size_t counters_size(void) {
  return __start___sancov_cntrs && __stop___sancov_cntrs ? (size_t)(__stop___sancov_cntrs - __start___sancov_cntrs) : 0;
}

static int write_all(int fd, const void *p, size_t n) {
  for (size_t done = 0; done < n;) {
    ssize_t w = write(fd, (const char *)p + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    done += (size_t)w;
  }
  return 0;
}

static size_t read_all(int fd, void *p, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, (char *)p + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
  }
  return got;
}

static _Noreturn void guard_child(int fd, uint64_t mem, unsigned seconds, at_status (*fn)(void *), void *arg) {
  /* a crash or the alarm ends the child, whatever handlers the parent had */
  static const int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGALRM, SIGXCPU};
  for (int i = 0; i < AT_ARRAY_LEN(sigs); i++) signal(sigs[i], SIG_DFL);
  struct rlimit as = {(rlim_t)mem, (rlim_t)mem}, core = {0, 0};
  setrlimit(RLIMIT_AS, &as);
  setrlimit(RLIMIT_CORE, &core);
  at_set_threads(1); /* OpenMP's and BLIS's thread pools do not survive fork: stay on this thread */
  alarm(seconds);
  guard_report r = {fn(arg), ""};
  snprintf(r.msg, sizeof r.msg, "%s", at_errmsg());
  int bad = write_all(fd, &r, sizeof r) || write_all(fd, __start___sancov_cntrs, counters_size());
  _exit(bad);
}

/* Adds the child's coverage counters to ours (saturating). */
static void merge_counters(int fd) {
  size_t n = counters_size();
  unsigned char *c = n ? malloc(n) : NULL;
  if (!c) return;
  if (read_all(fd, c, n) == n)
    for (size_t i = 0; i < n; i++)
      if (c[i]) __start___sancov_cntrs[i] = (unsigned char)AT_MIN(255, __start___sancov_cntrs[i] + c[i]);
  free(c);
}

at_status at_h5_guard(const char *path, at_status (*fn)(void *), void *arg) {
  const char *env = getenv("AT_H5_GUARD");
  if (env && !strcmp(env, "0")) return fn(arg);
  struct stat st;
  int64_t size = stat(path, &st) == 0 ? (int64_t)st.st_size : 0;
  uint64_t budget = ((uint64_t)512 << 20) + 3 * (uint64_t)size;
  unsigned seconds = 20 + (unsigned)(size >> 25);
  const char *limit = getenv("AT_H5_GUARD_SECONDS");
  if (limit && atoi(limit) > 0) seconds = (unsigned)atoi(limit);
  int fds[2];
  if (pipe(fds) != 0) return at_error(AT_E_IO, "%s: cannot make a pipe to check it (%s)", path, strerror(errno));
  fflush(NULL); /* nothing buffered is written twice */
  pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]), close(fds[1]);
    return at_error(AT_E_IO, "%s: cannot fork to check it (%s)", path, strerror(errno));
  }
  if (pid == 0) {
    close(fds[0]);
    guard_child(fds[1], mapped_bytes() + budget, seconds, fn, arg);
  }
  close(fds[1]);
  guard_report r;
  size_t got = read_all(fds[0], &r, sizeof r);
  if (got == sizeof r) merge_counters(fds[0]);
  close(fds[0]);
  int ws = 0;
  while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {}
  if (got == sizeof r && WIFEXITED(ws) && WEXITSTATUS(ws) == 0) {
    if (r.status == AT_OK) return fn(arg); /* for real: the file is as harmless here as it was there */
    r.msg[sizeof r.msg - 1] = '\0';
    if (r.status == AT_E_NOMEM)
      return at_error(AT_E_NOMEM, "%s (reading it needs more than %llu MiB: refused)", r.msg,
                      (unsigned long long)(budget >> 20));
    return at_error(r.status, "%s", r.msg); /* refused there: never parsed here */
  }
  if (WIFSIGNALED(ws) && (WTERMSIG(ws) == SIGALRM || WTERMSIG(ws) == SIGXCPU))
    return at_error(AT_E_FORMAT, "%s: reading it took more than %u s (a damaged or hostile HDF5 file): refused",
                    path, seconds);
  /* a signal, or a sanitizer's report and exit */
  char how[48];
  if (WIFSIGNALED(ws)) snprintf(how, sizeof how, "signal %d", WTERMSIG(ws));
  else snprintf(how, sizeof how, "exit status %d", WIFEXITED(ws) ? WEXITSTATUS(ws) : -1);
  return at_error(AT_E_FORMAT, "%s: reading it crashed the checking process (%s; within %llu MiB): a damaged or "
                  "hostile HDF5 file, refused", path, how, (unsigned long long)(budget >> 20));
}

/* ---- datasets -------------------------------------------------------------------- */

int at_h5_exists(at_h5 *h, const char *name) {
  if (strcmp(name, "/") == 0) return 1;
  /* check every prefix: H5Lexists fails on a missing intermediate group */
  char buf[1024];
  if (snprintf(buf, sizeof buf, "%s", name) >= (int)sizeof buf) return 0;
  for (char *p = buf + 1; ; p++) {
    if (*p == '/' || *p == '\0') {
      char c = *p;
      *p = '\0';
      if (H5Lexists(h->fid, buf, H5P_DEFAULT) <= 0) return 0;
      if (c == '\0') break;
      *p = c;
    }
  }
  return 1;
}

/* A standard integer or IEEE float type (what attnlab and h5py write):
 * conversions from anything more exotic are not attempted. */
static int standard_type(hid_t t) {
  const hid_t std[] = {H5T_STD_I8LE,  H5T_STD_I8BE,  H5T_STD_U8LE,  H5T_STD_U8BE,  H5T_STD_I16LE,
                       H5T_STD_I16BE, H5T_STD_U16LE, H5T_STD_U16BE, H5T_STD_I32LE, H5T_STD_I32BE,
                       H5T_STD_U32LE, H5T_STD_U32BE, H5T_STD_I64LE, H5T_STD_I64BE, H5T_STD_U64LE,
                       H5T_STD_U64BE, H5T_IEEE_F32LE, H5T_IEEE_F32BE, H5T_IEEE_F64LE, H5T_IEEE_F64BE};
  for (int i = 0; i < AT_ARRAY_LEN(std); i++)
    if (H5Tequal(t, std[i]) > 0) return 1;
  return 0;
}

/* The dataspace's rank and shape: simple or scalar, rank <= 4, at most
 * AT_H5_MAX_ELEMS elements in all. -1 with a reason in *why. */
static int64_t space_shape(hid_t sid, int *ndim, int64_t *shape, const char **why) {
  H5S_class_t cls = H5Sget_simple_extent_type(sid);
  int r = H5Sget_simple_extent_ndims(sid);
  *why = "is not a simple array";
  if ((cls != H5S_SIMPLE && cls != H5S_SCALAR) || r < 0) return -1;
  *why = "has rank > 4";
  if (r > 4) return -1;
  hsize_t dims[4] = {0};
  if (r > 0 && H5Sget_simple_extent_dims(sid, dims, NULL) != r) return -1;
  int64_t n = 1;
  *why = "declares too many elements";
  for (int i = 0; i < r; i++) {
    if (dims[i] > (hsize_t)AT_H5_MAX_ELEMS) return -1;
    shape[i] = (int64_t)dims[i];
    if (shape[i] && n > AT_H5_MAX_ELEMS / shape[i]) return -1;
    n *= shape[i];
  }
  *ndim = r;
  *why = NULL;
  return n;
}

/* Opens a dataset after checking its type, shape and storage. */
static hid_t open_dataset(at_h5 *h, const char *name, int *ndim, int64_t *shape, at_status *st) {
  if (!at_h5_exists(h, name)) {
    *st = at_error(AT_E_FORMAT, "%s: no dataset '%s'", h->path, name);
    return -1;
  }
  H5O_info_t info;
  if (H5Oget_info_by_name2(h->fid, name, &info, H5O_INFO_BASIC, H5P_DEFAULT) < 0 || info.type != H5O_TYPE_DATASET) {
    *st = at_error(AT_E_FORMAT, "%s: '%s' is not a dataset", h->path, name);
    return -1;
  }
  hid_t did = H5Dopen2(h->fid, name, H5P_DEFAULT);
  if (did < 0) {
    *st = at_error(AT_E_FORMAT, "%s: cannot open dataset '%s' (damaged?)", h->path, name);
    return -1;
  }
  hid_t ft = H5Dget_type(did), sid = H5Dget_space(did), dcpl = H5Dget_create_plist(did);
  const char *why = NULL;
  int64_t n = sid < 0 ? -1 : space_shape(sid, ndim, shape, &why);
  if (ft < 0 || !standard_type(ft)) why = "is not of a standard integer or float type";
  else if (n < 0) {}
  else if (dcpl < 0 || (H5Pget_layout(dcpl) != H5D_CONTIGUOUS && H5Pget_layout(dcpl) != H5D_COMPACT) ||
           H5Pget_nfilters(dcpl) != 0)
    why = "is chunked or filtered (attnlab reads contiguous, uncompressed data)";
  else if ((hsize_t)n * H5Tget_size(ft) != H5Dget_storage_size(did))
    why = "declares more data than it stores";
  if (ft >= 0) H5Tclose(ft);
  if (sid >= 0) H5Sclose(sid);
  if (dcpl >= 0) H5Pclose(dcpl);
  if (why) {
    H5Dclose(did);
    *st = at_error(AT_E_FORMAT, "%s: dataset '%s' %s", h->path, name, why);
    return -1;
  }
  return did;
}

at_status at_h5_shape(at_h5 *h, const char *name, int *ndim, int64_t *shape) {
  at_status st = AT_OK;
  hid_t did = open_dataset(h, name, ndim, shape, &st);
  if (did >= 0) H5Dclose(did);
  return st;
}

static int64_t nelem(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  return n;
}

static void shape_str(int ndim, const int64_t *shape, char *buf) {
  int n = sprintf(buf, "[");
  for (int i = 0; i < ndim; i++) n += sprintf(buf + n, i ? ",%lld" : "%lld", (long long)shape[i]);
  sprintf(buf + n, "]");
}

/* Reads `name` into `data` (memory type `mtype`); when check_shape, the
 * dataset must have exactly that shape. */
static at_status read_any(at_h5 *h, const char *name, hid_t mtype, int check_shape, int ndim,
                          const int64_t *shape, void *data) {
  at_status st = AT_OK;
  int r;
  int64_t s[4];
  hid_t did = open_dataset(h, name, &r, s, &st);
  if (did < 0) return st;
  if (check_shape) {
    int same = r == ndim;
    for (int i = 0; same && i < r; i++) same = s[i] == shape[i];
    if (!same) {
      char a[96], b[96];
      shape_str(r, s, a);
      shape_str(ndim, shape, b);
      st = at_error(AT_E_FORMAT, "%s: dataset '%s' has shape %s, expected %s", h->path, name, a, b);
    }
  }
  if (st == AT_OK && nelem(r, s) > 0 && H5Dread(did, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
    st = at_error(AT_E_FORMAT, "%s: cannot read dataset '%s' (corrupt?)", h->path, name);
  H5Dclose(did);
  return st;
}

at_status at_h5_read_real(at_h5 *h, const char *name, int ndim, const int64_t *shape, real *data) {
  return read_any(h, name, H5_REAL, 1, ndim, shape, data);
}

at_status at_h5_read_double(at_h5 *h, const char *name, int ndim, const int64_t *shape, double *data) {
  return read_any(h, name, H5T_NATIVE_DOUBLE, 1, ndim, shape, data);
}

at_status at_h5_read_int(at_h5 *h, const char *name, int ndim, const int64_t *shape, int32_t *data) {
  return read_any(h, name, H5T_NATIVE_INT32, 1, ndim, shape, data);
}

at_status at_h5_read_u8(at_h5 *h, const char *name, int64_t n, uint8_t *data) {
  return read_any(h, name, H5T_NATIVE_UINT8, 1, 1, &n, data);
}

/* The *_alloc readers: the shape first (checked against the storage, so
 * the buffer is never larger than what the file holds), then the data. */
static at_status read_alloc(at_h5 *h, const char *name, hid_t mtype, size_t esize, int *ndim, int64_t *shape,
                            void **data) {
  *data = NULL;
  at_status st = at_h5_shape(h, name, ndim, shape);
  if (st != AT_OK) return st;
  void *d = malloc((size_t)AT_MAX(nelem(*ndim, shape), 1) * esize);
  if (!d) return at_error(AT_E_NOMEM, "%s: out of memory reading '%s'", h->path, name);
  st = read_any(h, name, mtype, 1, *ndim, shape, d);
  if (st != AT_OK) free(d);
  else *data = d;
  return st;
}

at_status at_h5_read_real_alloc(at_h5 *h, const char *name, int *ndim, int64_t *shape, real **data) {
  return read_alloc(h, name, H5_REAL, sizeof(real), ndim, shape, (void **)data);
}

at_status at_h5_read_int_alloc(at_h5 *h, const char *name, int *ndim, int64_t *shape, int32_t **data) {
  return read_alloc(h, name, H5T_NATIVE_INT32, sizeof(int32_t), ndim, shape, (void **)data);
}

static hid_t link_props(void) {
  hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
  H5Pset_create_intermediate_group(lcpl, 1);
  return lcpl;
}

static at_status write_any(at_h5 *h, const char *name, hid_t ftype, hid_t mtype, int ndim,
                           const int64_t *shape, const void *data) {
  AT_ASSERT(h->writable && ndim >= 0 && ndim <= 4);
  hsize_t dims[4];
  for (int i = 0; i < ndim; i++) dims[i] = (hsize_t)shape[i];
  hid_t sid = ndim ? H5Screate_simple(ndim, dims, NULL) : H5Screate(H5S_SCALAR);
  hid_t lcpl = link_props();
  hid_t did = H5Dcreate2(h->fid, name, ftype, sid, lcpl, H5P_DEFAULT, H5P_DEFAULT);
  at_status st = AT_OK;
  if (did < 0)
    st = at_error(AT_E_IO, "%s: cannot create dataset '%s' (exists already, or disk full?)", h->path, name);
  else if (nelem(ndim, shape) > 0 && H5Dwrite(did, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
    st = at_error(AT_E_IO, "%s: cannot write dataset '%s' (disk full?)", h->path, name);
  if (did >= 0 && H5Dclose(did) < 0 && st == AT_OK)
    st = at_error(AT_E_IO, "%s: cannot write dataset '%s' (disk full?)", h->path, name);
  H5Pclose(lcpl);
  H5Sclose(sid);
  return st;
}

at_status at_h5_write_real(at_h5 *h, const char *name, int ndim, const int64_t *shape, const real *data) {
  return write_any(h, name, H5_REAL_FILE, H5_REAL, ndim, shape, data);
}
at_status at_h5_write_float(at_h5 *h, const char *name, int ndim, const int64_t *shape, const float *data) {
  return write_any(h, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, ndim, shape, data);
}
at_status at_h5_write_double(at_h5 *h, const char *name, int ndim, const int64_t *shape, const double *data) {
  return write_any(h, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, ndim, shape, data);
}
at_status at_h5_write_int(at_h5 *h, const char *name, int ndim, const int64_t *shape, const int32_t *data) {
  return write_any(h, name, H5T_STD_I32LE, H5T_NATIVE_INT32, ndim, shape, data);
}
at_status at_h5_write_u8(at_h5 *h, const char *name, int64_t n, const uint8_t *data) {
  return write_any(h, name, H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, &n, data);
}

at_status at_h5_make_group(at_h5 *h, const char *name) {
  if (at_h5_exists(h, name)) return AT_OK;
  hid_t lcpl = link_props();
  hid_t gid = H5Gcreate2(h->fid, name, lcpl, H5P_DEFAULT, H5P_DEFAULT);
  H5Pclose(lcpl);
  if (gid < 0) return at_error(AT_E_IO, "%s: cannot create group '%s'", h->path, name);
  H5Gclose(gid);
  return AT_OK;
}

/* ---- attributes ---------------------------------------------------------- */

static at_status set_attr(at_h5 *h, const char *obj, const char *attr, hid_t type, hid_t space,
                          const void *value) {
  if (!at_h5_exists(h, obj)) return at_error(AT_E_IO, "%s: no object '%s' for attribute %s", h->path, obj, attr);
  if (H5Aexists_by_name(h->fid, obj, attr, H5P_DEFAULT) > 0) H5Adelete_by_name(h->fid, obj, attr, H5P_DEFAULT);
  hid_t aid = H5Acreate_by_name(h->fid, obj, attr, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  at_status st = AT_OK;
  if (aid < 0 || H5Awrite(aid, type, value) < 0)
    st = at_error(AT_E_IO, "%s: cannot write attribute %s of '%s'", h->path, attr, obj);
  if (aid >= 0) H5Aclose(aid);
  return st;
}

at_status at_h5_set_attr_str(at_h5 *h, const char *obj, const char *attr, const char *value) {
  if (strlen(value) > AT_H5_MAX_STR)
    return at_error(AT_E_ARG, "%s: attribute %s of '%s' is longer than %zu bytes", h->path, attr, obj, AT_H5_MAX_STR);
  hid_t type = H5Tcopy(H5T_C_S1);
  H5Tset_size(type, strlen(value) + 1);
  H5Tset_strpad(type, H5T_STR_NULLTERM);
  hid_t space = H5Screate(H5S_SCALAR);
  at_status st = set_attr(h, obj, attr, type, space, value);
  H5Sclose(space);
  H5Tclose(type);
  return st;
}

at_status at_h5_set_attr_double(at_h5 *h, const char *obj, const char *attr, double value) {
  hid_t space = H5Screate(H5S_SCALAR);
  at_status st = set_attr(h, obj, attr, H5T_NATIVE_DOUBLE, space, &value);
  H5Sclose(space);
  return st;
}

at_status at_h5_set_attr_int(at_h5 *h, const char *obj, const char *attr, int64_t value) {
  hid_t space = H5Screate(H5S_SCALAR);
  at_status st = set_attr(h, obj, attr, H5T_NATIVE_INT64, space, &value);
  H5Sclose(space);
  return st;
}

at_status at_h5_set_attr_u64s(at_h5 *h, const char *obj, const char *attr, int n, const uint64_t *values) {
  hsize_t dim = (hsize_t)n;
  hid_t space = H5Screate_simple(1, &dim, NULL);
  at_status st = set_attr(h, obj, attr, H5T_NATIVE_UINT64, space, values);
  H5Sclose(space);
  return st;
}

int at_h5_has_attr(at_h5 *h, const char *obj, const char *attr) {
  return at_h5_exists(h, obj) && H5Aexists_by_name(h->fid, obj, attr, H5P_DEFAULT) > 0;
}

/* Opens an attribute and its type; *count receives the number of values
 * (-1 when the dataspace is neither simple nor scalar or is too large). */
static hid_t open_attr(at_h5 *h, const char *obj, const char *attr, hid_t *type, int64_t *count, at_status *st) {
  if (!at_h5_has_attr(h, obj, attr)) {
    *st = at_error(AT_E_FORMAT, "%s: '%s' has no attribute %s", h->path, obj, attr);
    return -1;
  }
  hid_t aid = H5Aopen_by_name(h->fid, obj, attr, H5P_DEFAULT, H5P_DEFAULT);
  *type = aid < 0 ? -1 : H5Aget_type(aid);
  if (aid < 0 || *type < 0) {
    if (aid >= 0) H5Aclose(aid);
    *st = at_error(AT_E_FORMAT, "%s: cannot open attribute %s of '%s'", h->path, attr, obj);
    return -1;
  }
  hid_t sp = H5Aget_space(aid);
  int nd;
  int64_t shape[4];
  const char *why;
  *count = sp < 0 ? -1 : space_shape(sp, &nd, shape, &why);
  if (sp >= 0) H5Sclose(sp);
  return aid;
}

static at_status get_attr_num(at_h5 *h, const char *obj, const char *attr, hid_t mtype, int n, void *out) {
  at_status st = AT_OK;
  hid_t ft;
  int64_t count;
  hid_t aid = open_attr(h, obj, attr, &ft, &count, &st);
  if (aid < 0) return st;
  if (!standard_type(ft) || count != n)
    st = at_error(AT_E_FORMAT, "%s: attribute %s of '%s' is not %d number(s)", h->path, attr, obj, n);
  else if (H5Aread(aid, mtype, out) < 0)
    st = at_error(AT_E_FORMAT, "%s: cannot read attribute %s of '%s'", h->path, attr, obj);
  H5Tclose(ft);
  H5Aclose(aid);
  return st;
}

at_status at_h5_get_attr_double(at_h5 *h, const char *obj, const char *attr, double *value) {
  return get_attr_num(h, obj, attr, H5T_NATIVE_DOUBLE, 1, value);
}
at_status at_h5_get_attr_int(at_h5 *h, const char *obj, const char *attr, int64_t *value) {
  return get_attr_num(h, obj, attr, H5T_NATIVE_INT64, 1, value);
}
at_status at_h5_get_attr_u64s(at_h5 *h, const char *obj, const char *attr, int n, uint64_t *values) {
  return get_attr_num(h, obj, attr, H5T_NATIVE_UINT64, n, values);
}

/* One string (fixed length, or variable length as h5py writes them). */
static at_status read_str_attr(at_h5 *h, hid_t aid, hid_t ft, const char *obj, const char *attr, char **value) {
  hid_t mt = H5Tcopy(H5T_C_S1);
  H5Tset_cset(mt, H5Tget_cset(ft)); /* HDF5 does not convert between ASCII and UTF-8 (h5py's) */
  at_status st = AT_OK;
  if (H5Tis_variable_str(ft) > 0) {
    H5Tset_size(mt, H5T_VARIABLE);
    char *s = NULL;
    if (H5Aread(aid, mt, &s) < 0 || !s) st = at_error(AT_E_FORMAT, "%s: cannot read attribute %s of '%s'", h->path, attr, obj);
    else if (strlen(s) > AT_H5_MAX_STR)
      st = at_error(AT_E_FORMAT, "%s: attribute %s of '%s' is longer than %zu bytes", h->path, attr, obj, AT_H5_MAX_STR);
    else if (!(*value = strdup(s)))
      st = at_error(AT_E_NOMEM, "%s: out of memory reading attribute %s", h->path, attr);
    if (s) H5free_memory(s);
  } else {
    size_t n = H5Tget_size(ft);
    char *s = n == 0 || n > AT_H5_MAX_STR ? NULL : calloc(n + 1, 1);
    H5Tset_size(mt, n + 1);
    H5Tset_strpad(mt, H5T_STR_NULLTERM);
    if (n == 0 || n > AT_H5_MAX_STR)
      st = at_error(AT_E_FORMAT, "%s: attribute %s of '%s' declares a string of %zu bytes (at most %zu)", h->path,
                    attr, obj, n, AT_H5_MAX_STR);
    else if (!s)
      st = at_error(AT_E_NOMEM, "%s: out of memory reading attribute %s", h->path, attr);
    else if (H5Aread(aid, mt, s) < 0)
      st = at_error(AT_E_FORMAT, "%s: cannot read attribute %s of '%s'", h->path, attr, obj);
    if (st == AT_OK) *value = s;
    else free(s);
  }
  H5Tclose(mt);
  return st;
}

at_status at_h5_get_attr_str(at_h5 *h, const char *obj, const char *attr, char **value) {
  *value = NULL;
  at_status st = AT_OK;
  hid_t ft;
  int64_t count;
  hid_t aid = open_attr(h, obj, attr, &ft, &count, &st);
  if (aid < 0) return st;
  if (H5Tget_class(ft) != H5T_STRING || count != 1)
    st = at_error(AT_E_FORMAT, "%s: attribute %s of '%s' is not a string", h->path, attr, obj);
  else
    st = read_str_attr(h, aid, ft, obj, attr, value);
  H5Tclose(ft);
  H5Aclose(aid);
  return st;
}

/* ---- listing --------------------------------------------------------------- */

typedef struct { char **names; int n, cap, too_many; } name_list;

static herr_t collect(hid_t g, const char *name, const H5L_info_t *info, void *op) {
  (void)g, (void)info;
  name_list *l = op;
  if (l->n == AT_H5_MAX_MEMBERS) return l->too_many = 1, -1;
  if (l->n == l->cap) {
    int cap = l->cap ? 2 * l->cap : 16;
    char **nn = realloc(l->names, (size_t)cap * sizeof *nn);
    if (!nn) return -1;
    l->names = nn, l->cap = cap;
  }
  l->names[l->n] = strdup(name);
  return l->names[l->n++] ? 0 : -1;
}

at_status at_h5_list(at_h5 *h, const char *group, char ***names, int *n) {
  name_list l = {0};
  *names = NULL, *n = 0;
  if (!at_h5_exists(h, group)) return at_error(AT_E_FORMAT, "%s: no group '%s'", h->path, group);
  H5O_info_t info;
  if (H5Oget_info_by_name2(h->fid, group, &info, H5O_INFO_BASIC, H5P_DEFAULT) < 0 || info.type != H5O_TYPE_GROUP)
    return at_error(AT_E_FORMAT, "%s: '%s' is not a group", h->path, group);
  hid_t gid = H5Gopen2(h->fid, group, H5P_DEFAULT);
  if (gid < 0) return at_error(AT_E_FORMAT, "%s: cannot open group '%s' (damaged?)", h->path, group);
  herr_t r = H5Literate(gid, H5_INDEX_NAME, H5_ITER_INC, NULL, collect, &l);
  H5Gclose(gid);
  if (r < 0) {
    at_h5_free_list(l.names, l.n);
    if (l.too_many) return at_error(AT_E_FORMAT, "%s: '%s' has more than %d members", h->path, group, AT_H5_MAX_MEMBERS);
    return at_error(AT_E_FORMAT, "%s: cannot list '%s'", h->path, group);
  }
  *names = l.names, *n = l.n;
  return AT_OK;
}

void at_h5_free_list(char **names, int n) {
  for (int i = 0; i < n; i++) free(names[i]);
  free(names);
}
