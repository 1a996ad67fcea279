#!/usr/bin/env python3
"""Reading an attnlab results file (results/<experiment>/results.h5) in Python.

    python3 tools/results.py results/kda_vs_full/results.h5            # one line per run
    python3 tools/results.py results/kda_vs_full/results.h5 --curves   # and every curve

Needs h5py; uses pandas when it is installed (DataFrames), else plain dicts
and lists. As a module:

    from results import read
    r = read("results/kda_vs_full/results.h5")
    r["runs"]          # one record per run and sweep point: name, status, params, steps,
                       # final_eval_loss, final_eval_accuracy, tokens_per_second, the extra
                       # attributes (cache_bytes_per_token, bits_per_byte, ...) and, per
                       # test set of data.eval, "<set>:final_loss" / "<set>:final_accuracy"
    r["train"]         # curves: run, step, loss
    r["eval"]          # run, step, loss, accuracy (the test split)
    r["eval_sets"]     # run, set, step, loss, accuracy (data.eval)
    r["series"]        # run, series, step, value (named curves, e.g. DSA's indexer_kl)
    r["attrs"]         # the file's attributes (experiment, source, date, ...)

The layout is documented in experiments/results.h: /runs/<id>/ with datasets
train_step, train_loss, eval_step, eval_loss, eval_accuracy, series/<name>/{step,value},
eval_sets/<name>/{step,loss,accuracy} (attributes config, final_loss, final_accuracy),
and the run's attributes.
"""
import sys

import h5py

try:
    import pandas as pd
except ImportError:  # plain lists of dicts instead
    pd = None


def _text(v):
    return v.decode() if isinstance(v, bytes) else v


def _num(v):
    return _text(v.item() if hasattr(v, "item") else v)


def read(path):
    """Every run, curve and test set of a results file, as tables."""
    out = {"runs": [], "train": [], "eval": [], "eval_sets": [], "series": []}
    with h5py.File(path, "r") as f:
        if _text(f.attrs.get("format", b"")) != "attnlab-results":
            raise ValueError(f"{path}: not an attnlab results file")
        out["attrs"] = {k: _num(v) for k, v in f.attrs.items()}
        runs = sorted(f["runs"].items(), key=lambda kv: int(kv[1].attrs["index"]))
        for rid, g in runs:
            rec = {"id": rid}
            for k, v in g.attrs.items():
                if k not in ("config", "extra_attrs", "eval_group_names"):
                    rec[k] = _num(v)
            name = rec.get("name", rid)
            for s, l in zip(g["train_step"][:], g["train_loss"][:]):
                out["train"].append({"run": name, "step": int(s), "loss": float(l)})
            for s, l, a in zip(g["eval_step"][:], g["eval_loss"][:], g["eval_accuracy"][:]):
                out["eval"].append({"run": name, "step": int(s), "loss": float(l), "accuracy": float(a)})
            for sname, sg in g.get("series", {}).items():
                for s, v in zip(sg["step"][:], sg["value"][:]):
                    out["series"].append({"run": name, "series": sname, "step": int(s), "value": float(v)})
            for ename, eg in g.get("eval_sets", {}).items():
                rec[f"{ename}:final_loss"] = float(eg.attrs["final_loss"])
                rec[f"{ename}:final_accuracy"] = float(eg.attrs["final_accuracy"])
                for s, l, a in zip(eg["step"][:], eg["loss"][:], eg["accuracy"][:]):
                    out["eval_sets"].append({"run": name, "set": ename, "step": int(s), "loss": float(l),
                                             "accuracy": float(a)})
            out["runs"].append(rec)
    if pd is not None:
        for k in ("runs", "train", "eval", "eval_sets", "series"):
            out[k] = pd.DataFrame(out[k])
    return out


def _print_rows(rows, cols):
    print("\t".join(cols))
    for r in rows:
        print("\t".join(f"{r[c]:.6g}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols))


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(sys.argv) > 1 else 2
    r = read(sys.argv[1])
    show = ["name", "status", "params", "steps", "final_eval_loss", "final_eval_accuracy", "tokens_per_second"]
    runs = r["runs"].to_dict("records") if pd is not None else r["runs"]
    sets = sorted({k for rec in runs for k in rec if k.endswith(":final_accuracy")})
    print(f"# {r['attrs'].get('experiment')} ({len(runs)} runs, {'pandas' if pd is not None else 'plain'})")
    _print_rows(runs, show + sets)
    if "--curves" in sys.argv[2:]:
        for k in ("eval", "eval_sets", "series"):
            rows = r[k].to_dict("records") if pd is not None else r[k]
            if rows:
                print(f"\n# {k}")
                _print_rows(rows, list(rows[0].keys()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
