#!/usr/bin/python3
"""Writes hand-made hostile HDF5 files into tests/fuzz_regressions/{checkpoint,results,cache}/.

Each is a real attnlab file (from a short training of fuzz/seed.yaml by
build/bin/train) with one thing changed the way a damaged or hostile file
could have it: compressed or chunked data, datasets that declare more than
they store or more elements than allowed, rank 5, string attributes with many
elements, variable-length strings, non-standard types, counts that disagree,
steps that go backwards, superblock version 3. The harnesses reseal sealed
inputs (see fuzz/targets.h), so each change reaches the readers' own checks.

    /usr/bin/python3 tests/ref/gen_hostile_hdf5.py      (from the source tree, after building build/)
"""
import os
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
out_dir = os.path.join(root, "tests", "fuzz_regressions")
work = tempfile.mkdtemp(prefix="attnlab_hostile_")
subprocess.run([os.path.join(root, "build", "bin", "train"), os.path.join(root, "fuzz", "seed.yaml"),
                "--out", work], check=True, stdout=subprocess.DEVNULL)
results = os.path.join(work, "results.h5")
ckpt = os.path.join(work, "checkpoints", "full.h5")


def variant(src, harness, name, change):
    dst = os.path.join(out_dir, harness, name + ".h5")
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        change(f)
    print("wrote", os.path.relpath(dst, root))


def replace(f, path, **kw):
    del f[path]
    f.create_dataset(path, **kw)


run = "runs/full"
R = [
    ("compressed_curve", lambda f: replace(f, run + "/train_loss", data=np.zeros(6), compression="gzip", chunks=(2,))),
    ("declared_not_stored", lambda f: replace(f, run + "/train_loss", shape=(6,), dtype="f8")),
    ("declares_2e40_elements", lambda f: replace(f, run + "/eval_loss", shape=(2**40,), dtype="f8",
                                                 chunks=(1024,))),
    ("rank5_steps", lambda f: replace(f, run + "/train_step", data=np.zeros((1, 1, 1, 1, 6), np.int32))),
    ("string_attr_of_1000", lambda f: f[run].attrs.__setitem__("name", np.array([b"x" * 50] * 1000))),
    ("vlen_config", lambda f: f[run].attrs.__setitem__("config", "a variable-length string")),
    ("float16_losses", lambda f: replace(f, run + "/train_loss", data=np.zeros(6, np.float16))),
    ("compound_steps", lambda f: replace(f, run + "/train_step", data=np.zeros(6, [("a", "i4"), ("b", "f8")]))),
    ("n_runs_disagrees", lambda f: f.attrs.__setitem__("n_runs", np.int64(7))),
    ("steps_go_back", lambda f: replace(f, run + "/train_step", data=np.array([0, 1, 2, 1, 4, 5], np.int32))),
    ("negative_step", lambda f: replace(f, run + "/eval_step", data=np.array([-2, 5], np.int32))),
    ("extra_attrs_10000", lambda f: f[run].attrs.__setitem__("extra_attrs", np.bytes_("\n".join(["x"] * 10000)))),
    ("extra_attr_fixed_name", lambda f: f[run].attrs.__setitem__("extra_attrs", np.bytes_("steps"))),
    ("series_300", lambda f: [f.create_dataset("%s/series/s%d/%s" % (run, i, k), data=np.zeros(1))
                              for i in range(300) for k in ("step", "value")]),
    ("group_names_disagree", lambda f: f[run].attrs.__setitem__("eval_group_names", np.bytes_("a\nb\nc"))),
    ("run_id_too_long", lambda f: f.move(run, "runs/" + "r" * 200)),
    ("format_is_a_list", lambda f: f.attrs.__setitem__("format", np.array([b"attnlab-results"] * 3))),
]
C = [
    ("compressed_param", lambda f: replace(f, "params/tok_emb", data=f["params/tok_emb"][()],
                                           compression="gzip")),
    ("param_declared_not_stored", lambda f: replace(f, "params/tok_emb", shape=f["params/tok_emb"].shape,
                                                    dtype="f4")),
    ("param_float16", lambda f: replace(f, "params/tok_emb", data=f["params/tok_emb"][()].astype(np.float16))),
    ("n_values_disagrees", lambda f: f.attrs.__setitem__("n_values", np.int64(12345))),
    ("negative_step", lambda f: f.attrs.__setitem__("step", np.int64(-3))),
    ("skipped_above_steps", lambda f: f.attrs.__setitem__("skipped_steps", np.int64(1000))),
    ("index_huge_dims", lambda f: f.attrs.__setitem__("param_index", np.bytes_("tok_emb\t[4294967296,4294967296]\n"))),
    ("rng_count_100", lambda f: f.attrs.__setitem__("n_rng", np.int64(100))),
    ("config_string_array", lambda f: f.attrs.__setitem__("config", np.array([b"y" * 100] * 500))),
]
for name, change in R:
    variant(results, "results", name, change)
for name, change in C:
    variant(ckpt, "checkpoint", name, change)
# the token cache of the cache harness's corpus, as bench/fuzz.sh makes it
cache = os.path.join(root, "build-fuzz", "seeds", "cache", "cache.h5")
if os.path.exists(cache):
    K = [
        ("compressed_train", lambda f: replace(f, "train", data=f["train"][()], compression="gzip")),
        ("train_declared_not_stored", lambda f: replace(f, "train", shape=f["train"].shape, dtype="u1")),
        ("train_2d", lambda f: replace(f, "train", data=f["train"][()].reshape(1, -1))),
        ("train_int64", lambda f: replace(f, "train", data=f["train"][()].astype(np.int64))),
        ("sizes_disagree", lambda f: replace(f, "val", data=f["val"][()][:-1])),
        ("format_vlen", lambda f: f.attrs.__setitem__("format", "attnlab-token-cache-v1")),
        ("source_array", lambda f: f.attrs.__setitem__("source", np.array([b"/tmp"] * 100))),
        ("another_version", lambda f: f.attrs.__setitem__("format", np.bytes_("attnlab-token-cache-v0"))),
        ("not_a_cache", lambda f: f.attrs.__setitem__("format", np.bytes_("something-else"))),
    ]
    for name, change in K:
        variant(cache, "cache", name, change)
    shutil.copy(cache, os.path.join(out_dir, "cache", "current.h5"))
else:
    print("no build-fuzz/seeds/cache/cache.h5 (run bench/fuzz.sh first): cache variants skipped", file=sys.stderr)

# superblock version 3, no seal: the same results and checkpoint rewritten by h5py's latest format
for src, harness in ((results, "results"), (ckpt, "checkpoint")):
    dst = os.path.join(out_dir, harness, "superblock_v3.h5")
    with h5py.File(src, "r") as a, h5py.File(dst, "w", libver="latest") as b:
        for k, v in a.attrs.items():
            b.attrs[k] = v
        for k in a:
            a.copy(k, b)
    print("wrote", os.path.relpath(dst, root))
shutil.rmtree(work)
