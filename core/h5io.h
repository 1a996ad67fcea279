/* core/h5io.h: the HDF5 files attnlab reads and writes (checkpoints,
 * results, token caches, golden test data, probe inputs and outputs).
 *
 * Every failure returns a status with a message naming the file and the
 * object; HDF5's own error printing is silenced.
 *
 * Writing. Files opened with at_h5_create go to "<path>.tmp.<host>.<pid>"
 * (at_h5_tmp_name): one temporary file per process, so that processes
 * writing the same path at once (MPI ranks building one token cache) never
 * write into each other's file, and the last complete one wins; those of
 * this host's writers that died are removed by the next at_h5_create.
 * at_h5_commit closes the file, seals it (below), fsyncs it, renames it
 * over <path> and fsyncs the directory, checking every step: a crash or a
 * full disk leaves the previous <path> as it was.
 *
 * The seal. Files attnlab writes start with a 512-byte HDF5 user block
 * (which HDF5 and h5py skip) holding the text
 *     "attnlab-sealed-hdf5 1\nlength <bytes>\nhash <16 hex digits>\n"
 * the file's length and a 64-bit hash of every byte after the block.
 * at_h5_open checks both before HDF5 parses anything, so a truncated,
 * extended or bit-flipped file is refused with what is wrong. Files without
 * a seal (written by h5py, or by attnlab before seals) are read after the
 * checks below.
 *
 * Reading untrusted files. Before HDF5 opens a file: it must be a regular
 * file starting with the HDF5 signature (or a seal), with 8-byte offsets
 * and lengths, whose superblock's end-of-file address equals the file's
 * size. Before anything is allocated: a dataset has rank <= 4, at most
 * AT_H5_MAX_ELEMS elements of a standard integer or IEEE float type, and
 * contiguous or compact storage of exactly elements x type size bytes (so
 * no chunked, compressed or partly written data, and never more memory
 * than the file holds); a string attribute is at most AT_H5_MAX_STR bytes;
 * a group lists at most AT_H5_MAX_MEMBERS members. HDF5 itself is not
 * robust against hostile files (crashes and endless loops in the library
 * have been found by fuzzing): at_h5_guard runs a whole reader first in a
 * child process with memory and time limits, and refuses the file if the
 * child dies.
 */
#ifndef AT_H5IO_H
#define AT_H5IO_H

#include "core/base.h"

#define AT_H5_MAX_ELEMS ((int64_t)1 << 31)
#define AT_H5_MAX_STR ((size_t)16 << 20)
#define AT_H5_MAX_MEMBERS 65536
#define AT_H5_SEAL_BYTES 512

typedef struct at_h5 at_h5;

at_status at_h5_open(const char *path, at_h5 **out);              /* read-only */
at_status at_h5_create(const char *path, at_h5 **out);            /* new file, via .tmp */
void at_h5_tmp_name(const char *path, char *buf, size_t n);        /* this process's temporary file */
at_status at_h5_commit(at_h5 *h);   /* close, seal, fsync, rename into place; frees h */
void at_h5_close(at_h5 *h);         /* close; an uncommitted new file is deleted */
const char *at_h5_path(const at_h5 *h);
/* 1 if the file starts with attnlab's seal (whether or not it verifies):
 * attnlab wrote it, so a damaged copy is attnlab's to replace. */
int at_h5_sealed(const char *path);
/* (Re)writes the seal of a closed HDF5 file that has the 512-byte user
 * block, and fsyncs it (at_h5_commit does this to its temporary file; the
 * fuzz harnesses reseal mutated files). */
at_status at_h5_seal(const char *path);

/* Runs fn(arg), which reads the HDF5 file `path`, first in a child process
 * (address space limited to 512 MiB + 3x the file's size beyond the
 * parent's, 20 s + 1 s per 32 MiB of file). Only when fn succeeds there
 * does it run in this process (fn must be deterministic: same file, same
 * outcome), so this process never parses a file that was refused. If fn
 * fails in the child, its status and message are returned; if the child
 * crashes or runs out of time, AT_E_FORMAT with the reason. AT_H5_GUARD=0
 * in the environment runs fn directly (to debug a reader);
 * AT_H5_GUARD_SECONDS=n sets the time limit. */
at_status at_h5_guard(const char *path, at_status (*fn)(void *), void *arg);

/* 1 if the object (dataset, group or "group/attribute"-free path) exists. */
int at_h5_exists(at_h5 *h, const char *name);
/* Shape of a dataset (rank <= 4; scalars have rank 0), after the checks
 * above (type, storage, element count). */
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
