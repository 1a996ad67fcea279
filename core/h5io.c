/* core/h5io.c: thin, checked wrappers over the HDF5 C API. */
#define _POSIX_C_SOURCE 200809L
#include "core/h5io.h"

#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct at_h5 {
  hid_t fid;
  int writable;
  char path[1024];
  char tmp[1040];
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

at_status at_h5_open(const char *path, at_h5 **out) {
  quiet();
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return at_error(AT_E_IO, "%s: cannot open for reading", path);
  fclose(f);
  if (H5Fis_hdf5(path) <= 0) return at_error(AT_E_FORMAT, "%s: not an HDF5 file", path);
  hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
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
  snprintf(h->tmp, sizeof h->tmp, "%s.tmp", path);
  h->fid = H5Fcreate(h->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
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
  if (H5Fflush(h->fid, H5F_SCOPE_GLOBAL) < 0 || H5Fclose(h->fid) < 0)
    st = at_error(AT_E_IO, "%s: cannot flush (disk full?)", h->path);
  else if (rename(h->tmp, h->path) != 0)
    st = at_error(AT_E_IO, "%s: cannot rename %s into place", h->path, h->tmp);
  if (st != AT_OK) remove(h->tmp);
  free(h);
  return st;
}

void at_h5_close(at_h5 *h) {
  if (!h) return;
  H5Fclose(h->fid);
  if (h->writable) remove(h->tmp);
  free(h);
}

int at_h5_exists(at_h5 *h, const char *name) {
  if (strcmp(name, "/") == 0) return 1;
  /* check every prefix: H5Lexists fails on a missing intermediate group */
  char buf[1024];
  snprintf(buf, sizeof buf, "%s", name);
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

static hid_t open_dataset(at_h5 *h, const char *name, at_status *st) {
  if (!at_h5_exists(h, name)) {
    *st = at_error(AT_E_FORMAT, "%s: no dataset '%s'", h->path, name);
    return -1;
  }
  hid_t did = H5Dopen2(h->fid, name, H5P_DEFAULT);
  if (did < 0) *st = at_error(AT_E_FORMAT, "%s: '%s' is not a dataset", h->path, name);
  return did;
}

at_status at_h5_shape(at_h5 *h, const char *name, int *ndim, int64_t *shape) {
  at_status st = AT_OK;
  hid_t did = open_dataset(h, name, &st);
  if (did < 0) return st;
  hid_t sid = H5Dget_space(did);
  int r = H5Sget_simple_extent_ndims(sid);
  if (r < 0 || r > 4) {
    st = at_error(AT_E_FORMAT, "%s: dataset '%s' has rank %d (at most 4 supported)", h->path, name, r);
  } else {
    hsize_t dims[4] = {0};
    H5Sget_simple_extent_dims(sid, dims, NULL);
    *ndim = r;
    for (int i = 0; i < r; i++) shape[i] = (int64_t)dims[i];
  }
  H5Sclose(sid);
  H5Dclose(did);
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

/* Reads `name` into `data` (memory type `mtype`) after checking its class
 * and, when check_shape, its shape. */
static at_status read_any(at_h5 *h, const char *name, hid_t mtype, H5T_class_t want_class2,
                          int check_shape, int ndim, const int64_t *shape, void *data) {
  at_status st = AT_OK;
  int r;
  int64_t s[4];
  if ((st = at_h5_shape(h, name, &r, s)) != AT_OK) return st;
  if (check_shape) {
    int same = r == ndim;
    for (int i = 0; same && i < r; i++) same = s[i] == shape[i];
    if (!same) {
      char a[96], b[96];
      shape_str(r, s, a);
      shape_str(ndim, shape, b);
      return at_error(AT_E_FORMAT, "%s: dataset '%s' has shape %s, expected %s", h->path, name, a, b);
    }
  }
  hid_t did = open_dataset(h, name, &st);
  if (did < 0) return st;
  hid_t ft = H5Dget_type(did);
  H5T_class_t cls = H5Tget_class(ft);
  if (cls != H5T_FLOAT && cls != H5T_INTEGER && cls != want_class2)
    st = at_error(AT_E_FORMAT, "%s: dataset '%s' is not numeric", h->path, name);
  else if (H5Dread(did, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
    st = at_error(AT_E_FORMAT, "%s: cannot read dataset '%s' (corrupt?)", h->path, name);
  H5Tclose(ft);
  H5Dclose(did);
  return st;
}

at_status at_h5_read_real(at_h5 *h, const char *name, int ndim, const int64_t *shape, real *data) {
  return read_any(h, name, H5_REAL, H5T_FLOAT, 1, ndim, shape, data);
}

at_status at_h5_read_double(at_h5 *h, const char *name, int ndim, const int64_t *shape, double *data) {
  return read_any(h, name, H5T_NATIVE_DOUBLE, H5T_FLOAT, 1, ndim, shape, data);
}

at_status at_h5_read_int(at_h5 *h, const char *name, int ndim, const int64_t *shape, int32_t *data) {
  return read_any(h, name, H5T_NATIVE_INT32, H5T_INTEGER, 1, ndim, shape, data);
}

at_status at_h5_read_u8(at_h5 *h, const char *name, int64_t n, uint8_t *data) {
  return read_any(h, name, H5T_NATIVE_UINT8, H5T_INTEGER, 1, 1, &n, data);
}

at_status at_h5_read_real_alloc(at_h5 *h, const char *name, int *ndim, int64_t *shape, real **data) {
  *data = NULL;
  at_status st = at_h5_shape(h, name, ndim, shape);
  if (st != AT_OK) return st;
  real *d = malloc((size_t)AT_MAX(nelem(*ndim, shape), 1) * sizeof *d);
  if (!d) return at_error(AT_E_NOMEM, "out of memory reading %s", name);
  st = read_any(h, name, H5_REAL, H5T_FLOAT, 0, 0, NULL, d);
  if (st != AT_OK) free(d);
  else *data = d;
  return st;
}

at_status at_h5_read_int_alloc(at_h5 *h, const char *name, int *ndim, int64_t *shape, int32_t **data) {
  *data = NULL;
  at_status st = at_h5_shape(h, name, ndim, shape);
  if (st != AT_OK) return st;
  int32_t *d = malloc((size_t)AT_MAX(nelem(*ndim, shape), 1) * sizeof *d);
  if (!d) return at_error(AT_E_NOMEM, "out of memory reading %s", name);
  st = read_any(h, name, H5T_NATIVE_INT32, H5T_INTEGER, 0, 0, NULL, d);
  if (st != AT_OK) free(d);
  else *data = d;
  return st;
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
    st = at_error(AT_E_IO, "%s: cannot create dataset '%s' (exists already?)", h->path, name);
  else if (nelem(ndim, shape) > 0 && H5Dwrite(did, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
    st = at_error(AT_E_IO, "%s: cannot write dataset '%s' (disk full?)", h->path, name);
  if (did >= 0) H5Dclose(did);
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

static hid_t open_attr(at_h5 *h, const char *obj, const char *attr, at_status *st) {
  if (!at_h5_has_attr(h, obj, attr)) {
    *st = at_error(AT_E_FORMAT, "%s: '%s' has no attribute %s", h->path, obj, attr);
    return -1;
  }
  hid_t aid = H5Aopen_by_name(h->fid, obj, attr, H5P_DEFAULT, H5P_DEFAULT);
  if (aid < 0) *st = at_error(AT_E_FORMAT, "%s: cannot open attribute %s of '%s'", h->path, attr, obj);
  return aid;
}

static at_status get_attr_num(at_h5 *h, const char *obj, const char *attr, hid_t mtype, int n, void *out) {
  at_status st = AT_OK;
  hid_t aid = open_attr(h, obj, attr, &st);
  if (aid < 0) return st;
  hid_t sp = H5Aget_space(aid);
  hssize_t count = H5Sget_simple_extent_npoints(sp);
  hid_t ft = H5Aget_type(aid);
  H5T_class_t cls = H5Tget_class(ft);
  if ((cls != H5T_INTEGER && cls != H5T_FLOAT) || count != n)
    st = at_error(AT_E_FORMAT, "%s: attribute %s of '%s' is not %d number(s)", h->path, attr, obj, n);
  else if (H5Aread(aid, mtype, out) < 0)
    st = at_error(AT_E_FORMAT, "%s: cannot read attribute %s of '%s'", h->path, attr, obj);
  H5Tclose(ft);
  H5Sclose(sp);
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

at_status at_h5_get_attr_str(at_h5 *h, const char *obj, const char *attr, char **value) {
  *value = NULL;
  at_status st = AT_OK;
  hid_t aid = open_attr(h, obj, attr, &st);
  if (aid < 0) return st;
  hid_t ft = H5Aget_type(aid);
  if (H5Tget_class(ft) != H5T_STRING) {
    st = at_error(AT_E_FORMAT, "%s: attribute %s of '%s' is not a string", h->path, attr, obj);
  } else if (H5Tis_variable_str(ft) > 0) {
    hid_t mt = H5Tcopy(H5T_C_S1);
    H5Tset_size(mt, H5T_VARIABLE);
    char *s = NULL;
    if (H5Aread(aid, mt, &s) < 0 || !s) st = at_error(AT_E_FORMAT, "%s: cannot read attribute %s", h->path, attr);
    else {
      *value = strdup(s);
      H5free_memory(s);
    }
    H5Tclose(mt);
  } else {
    size_t n = H5Tget_size(ft);
    char *s = calloc(n + 1, 1);
    hid_t mt = H5Tcopy(H5T_C_S1);
    H5Tset_size(mt, n + 1);
    H5Tset_strpad(mt, H5T_STR_NULLTERM);
    if (!s || H5Aread(aid, mt, s) < 0) {
      free(s);
      st = at_error(AT_E_FORMAT, "%s: cannot read attribute %s", h->path, attr);
    } else *value = s;
    H5Tclose(mt);
  }
  H5Tclose(ft);
  H5Aclose(aid);
  return st;
}

/* ---- listing --------------------------------------------------------------- */

typedef struct { char **names; int n, cap; } name_list;

static herr_t collect(hid_t g, const char *name, const H5L_info_t *info, void *op) {
  (void)g, (void)info;
  name_list *l = op;
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
  hid_t gid = H5Gopen2(h->fid, group, H5P_DEFAULT);
  if (gid < 0) return at_error(AT_E_FORMAT, "%s: '%s' is not a group", h->path, group);
  herr_t r = H5Literate(gid, H5_INDEX_NAME, H5_ITER_INC, NULL, collect, &l);
  H5Gclose(gid);
  if (r < 0) {
    at_h5_free_list(l.names, l.n);
    return at_error(AT_E_FORMAT, "%s: cannot list '%s'", h->path, group);
  }
  *names = l.names, *n = l.n;
  return AT_OK;
}

void at_h5_free_list(char **names, int n) {
  for (int i = 0; i < n; i++) free(names[i]);
  free(names);
}
