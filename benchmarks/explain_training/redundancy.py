"""Premise check: are the features that change between two seeds' top-10 redundant copies?

For each config, donor, class and seed pair (a, b): S = top10(a) \\ top10(b), T = top10(b).
For each f in S: max |Pearson r| (over all cells of the training donor, prepared protein) with
any g in T \\ top10(a). Compared with the same statistic for |S| features drawn at random from
outside top10(b). Also a "soft" overlap@10: share of top10(a) in top10(b) or with |r| >= 0.5
to a member of top10(b).
"""
import itertools
import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
WORKDIR = Path(os.environ.get("EXPLAIN_TRAINING_DIR", "/tmp/inputdrop"))
import explain as ex  # noqa: E402

feats = json.loads((WORKDIR / "prot_features.json").read_text())
mdata = ex.load_bmmc()
corr = {}
for d in ("s1d1", "s1d2"):
    a = mdata[mdata.obs["batch"] == d].mod["prot"]
    assert list(a.var_names) == feats or set(a.var_names) >= set(feats)
    x = ex.dense(a[:, feats].X).astype(np.float64)
    c = np.corrcoef(x.T)
    corr[d] = np.abs(np.nan_to_num(c))
    np.fill_diagonal(corr[d], 0)
rng = np.random.default_rng(0)
K = 10
configs = sys.argv[1].split(",")
methods = ["gxi_logsoftmax", "ig_logsoftmax", "wilcoxon"]
fits = {}
for p in (WORKDIR / "fits").glob("*.pkl"):
    r = pickle.loads(p.read_bytes())
    if r["config"] in configs:
        fits[(r["config"], r["donor"], r["seed"])] = r["rankings"]
print("| config | method | top-10 overlap | swapped per class | max abs r of swapped-out with swapped-in | same, random features | soft overlap@10 (abs r >= 0.5) |")
print("|---|---|---|---|---|---|---|")
for cfg in configs:
    for m in methods:
        ov, nsw, rs, rr, soft, softr = [], [], [], [], [], []
        for d in ("s1d1", "s1d2"):
            seeds = sorted(s for (c, dd, s) in fits if c == cfg and dd == d)
            C = corr[d]
            for a, b in itertools.combinations(seeds, 2):
                A, B = fits[(cfg, d, a)][m]["prot"], fits[(cfg, d, b)][m]["prot"]
                for c in range(A.shape[1]):
                    if np.isnan(A[:, c]).all() or np.isnan(B[:, c]).all():
                        continue
                    ta, tb = set(ex.top(A[:, c], K)), set(ex.top(B[:, c], K))
                    out_, in_ = sorted(ta - tb), sorted(tb - ta)
                    ov.append(len(ta & tb) / K)
                    nsw.append(len(out_))
                    soft.append(np.mean([f in tb or C[f, sorted(tb)].max() >= 0.5 for f in ta]))
                    ra = rng.choice(len(feats), K, replace=False)
                    softr.append(np.mean([f in tb or C[f, sorted(tb)].max() >= 0.5 for f in ra]))
                    if not out_:
                        continue
                    rs.extend(C[f, in_].max() for f in out_)
                    pool = np.setdiff1d(np.arange(len(feats)), sorted(tb | ta))
                    for f in out_:
                        g = rng.choice(pool)
                        rr.append(C[g, in_].max())
        print(f"| {cfg} | {m} | {np.mean(ov):.2f} | {np.mean(nsw):.1f} | {np.mean(rs):.2f} | "
              f"{np.mean(rr):.2f} | {np.mean(soft):.2f} (random 10: {np.mean(softr):.2f}) |")
