"""Choose mmdyn_sc defaults for the BMMC benchmark on a validation split of the TRAINING donor.

The test donor is never touched. For each training donor (s1d1, s1d2), its cells of the
13 benchmark classes are split 80/20 stratified (seeded); ``tl.fit`` is trained on the 80 %
(it makes its own 90/10 split of those for early stopping) with the package defaults plus
one configuration's overrides, and macro F1 is measured on the 20 % (``_harness.score``, the
benchmarks' one metric code; before ``benchmarks/_harness.py`` this script averaged over all
classes of that donor with ``labels=``). Configurations change one option at a time from the
defaults, plus any given with ``--extra``.

Usage::

    MMDYN_SC_DATA_DIR=/work/shared/data python benchmarks/bmmc_tune.py
    python benchmarks/bmmc_tune.py --only default n_hidden=512 --seeds 2   # seeds 0, 1
    python benchmarks/bmmc_tune.py --only none --extra '{"combo": {"n_hidden": 512, "lr": 0.003}}'
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from _data import donor, load_bmmc
from _harness import add_seeds_argument, quiet_process, score
from _mmfit import fit_predict

#: name -> tl.fit overrides (on top of the package defaults)
CONFIGS: dict[str, dict] = {
    "default": {},
    "n_hidden=64": {"n_hidden": 64},
    "n_hidden=128": {"n_hidden": 128},
    "n_hidden=512": {"n_hidden": 512},
    "dropout=0.2": {"dropout": 0.2},
    "feature_scaling=None": {"feature_scaling": None},
    "class_weights=None": {"class_weights": None},
    "lr=3e-3": {"lr": 3e-3},
    "batch_size=32": {"batch_size": 32},
    "batch_size=64": {"batch_size": 64},
    "sparsity=0.1": {"loss_weights": {"sparsity": 0.1}},
    "patience=50": {"early_stopping_patience": 50},
}


def validation_split(mdata, seed):
    from sklearn.model_selection import StratifiedShuffleSplit

    y = mdata.obs["cell_type"].astype(str).to_numpy()
    split = StratifiedShuffleSplit(n_splits=1, test_size=0.2, random_state=seed)
    tr, va = next(split.split(np.zeros(len(y)), y))
    return mdata[np.sort(tr)].copy(), mdata[np.sort(va)].copy(), sorted(set(y))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_seeds_argument(parser, 1, what="tl.fit seeds (the 80/20 split is fixed by --split-seed)")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", default=None,
                        help="names of CONFIGS to run ('none' for only --extra)")
    parser.add_argument("--extra", type=json.loads, default={},
                        help='JSON {"name": {tl.fit options}} added to the sweep')
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    quiet_process(args.threads)

    configs = {k: v for k, v in CONFIGS.items() if args.only is None or k in args.only}
    configs.update(args.extra)
    t0 = time.perf_counter()
    mdata, _ = load_bmmc()
    splits = {}
    for name in ("s1d1", "s1d2"):
        splits[name] = validation_split(donor(mdata, name), args.split_seed)
        tr, va, cl = splits[name]
        print(f"{name}: {tr.n_obs} fit / {va.n_obs} validation cells, {len(cl)} classes",
              flush=True)
    rows = []
    for cname, options in configs.items():
        row = {"config": cname, "options": options}
        for dname, (tr, va, _) in splits.items():
            f1s, secs, epochs = [], [], []
            for seed in args.seeds:
                y_val = va.obs["cell_type"].astype(str).to_numpy()
                pred, s, e = fit_predict(tr, va, seed, options)
                f1s.append(score(y_val, pred)["f1_macro"])
                secs.append(s)
                epochs.append(e)
            row[dname] = float(np.mean(f1s))
            row[f"{dname}_all"] = f1s
            row[f"{dname}_s"] = float(np.median(secs))
            row[f"{dname}_epochs"] = epochs
        row["mean"] = (row["s1d1"] + row["s1d2"]) / 2
        rows.append(row)
        print(f"{cname:24s} val macro F1 s1d1 {row['s1d1']:.3f} {row['s1d1_all']} "
              f"s1d2 {row['s1d2']:.3f} {row['s1d2_all']} mean {row['mean']:.3f} | "
              f"{row['s1d1_s']:.0f}s/{row['s1d2_s']:.0f}s, epochs {row['s1d1_epochs']}"
              f"/{row['s1d2_epochs']}", flush=True)
    print()
    print(f"Validation macro F1 (80/20 split of the training donor, split seed "
          f"{args.split_seed}; tl.fit seeds {args.seeds})")
    print()
    print("| config | s1d1 val | s1d2 val | mean | median fit s |")
    print("|---|---|---|---|---|")
    for row in sorted(rows, key=lambda r: -r["mean"]):
        print(f"| {row['config']} | {row['s1d1']:.3f} | {row['s1d2']:.3f} | {row['mean']:.3f} "
              f"| {np.median([row['s1d1_s'], row['s1d2_s']]):.0f} |")
    print(f"\nTotal wall time {time.perf_counter() - t0:.0f} s")
    return rows


if __name__ == "__main__":
    main()
