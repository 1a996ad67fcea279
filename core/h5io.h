/* core/h5io.h: the HDF5 files attnlab reads and writes (checkpoints,
 * results, token caches, golden test data, probe inputs and outputs).
 *
 * Every failure returns a status with a message naming the file and the
 * object; HDF5's own error printing is silenced. Files opened for writing
 * with at_h5_create go to "<path>.tmp" and are renamed over <path> only by
 * at_h5_commit, so a crash never leaves a half-written file.
 */
#ifndef AT_H5IO_H
#define AT_H5IO_H

#include "core/base.h"

typedef struct at_h5 at_h5;

at_status at_h5_open(const char *path, at_h5 **out);              /* read-only */
at_status at_h5_create(const char *path, at_h5 **out);            /* new file, via .tmp */
at_status at_h5_commit(at_h5 *h);   /* flush, close and rename into place; frees h */
void at_h5_close(at_h5 *h);         /* close; an uncommitted new file is deleted */
const char *at_h5_path(const at_h5 *h);

/* 1 if the object (dataset, group or "group/attribute"-free path) exists. */
int at_h5_exists(at_h5 *h, const char *name);
/* Shape of a dataset (rank <= 4; scalars have rank 0). */
at_status at_h5_shape(at_h5 *h, const char *name, int *ndim, int64_t *shape);

/* Reads a float32/float64/integer dataset converted to real / double / int32.
 * The *_alloc forms malloc the buffer and return the shape; the others
 * require the shape to be exactly (ndim, shape). */
at_status at_h5_read_real_alloc(at_h5 *h, const char *name, int *ndim, int64_t *shape, real **data);
at_status at_h5_read_real(at_h5 *h, const char *name, int ndim, const int64_t *shape, real *data);
at_status at_h5_read_double(at_h5 *h, const char *name, int ndim, const int64_t *shape, double *data);
at_status at_h5_read_int_alloc(at_h5 *h, const char *name, int *ndim, int64_t *shape, int32_t **data);
at_status at_h5_read_int(at_h5 *h, const char *name, int ndim, const int64_t *shape, int32_t *data);
at_status at_h5_read_u8(at_h5 *h, const char *name, int64_t n, uint8_t *data);

/* Writes a dataset (intermediate groups are created). `real` data is stored
 * as float32 in the float build and float64 in the double build. */
at_status at_h5_write_real(at_h5 *h, const char *name, int ndim, const int64_t *shape, const real *data);
at_status at_h5_write_float(at_h5 *h, const char *name, int ndim, const int64_t *shape, const float *data);
at_status at_h5_write_double(at_h5 *h, const char *name, int ndim, const int64_t *shape, const double *data);
at_status at_h5_write_int(at_h5 *h, const char *name, int ndim, const int64_t *shape, const int32_t *data);
at_status at_h5_write_u8(at_h5 *h, const char *name, int64_t n, const uint8_t *data);
at_status at_h5_make_group(at_h5 *h, const char *name);

/* Attributes on an object ("/" for the root). */
at_status at_h5_set_attr_str(at_h5 *h, const char *obj, const char *attr, const char *value);
at_status at_h5_set_attr_double(at_h5 *h, const char *obj, const char *attr, double value);
at_status at_h5_set_attr_int(at_h5 *h, const char *obj, const char *attr, int64_t value);
at_status at_h5_set_attr_u64s(at_h5 *h, const char *obj, const char *attr, int n, const uint64_t *values);
int at_h5_has_attr(at_h5 *h, const char *obj, const char *attr);
/* A string attribute, malloc'ed. */
at_status at_h5_get_attr_str(at_h5 *h, const char *obj, const char *attr, char **value);
at_status at_h5_get_attr_double(at_h5 *h, const char *obj, const char *attr, double *value);
at_status at_h5_get_attr_int(at_h5 *h, const char *obj, const char *attr, int64_t *value);
at_status at_h5_get_attr_u64s(at_h5 *h, const char *obj, const char *attr, int n, uint64_t *values);

/* Names of the members of a group (malloc'ed array of malloc'ed strings). */
at_status at_h5_list(at_h5 *h, const char *group, char ***names, int *n);
void at_h5_free_list(char **names, int n);

#endif
