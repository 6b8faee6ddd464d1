"""Aggregate $EXPLAIN_TRAINING_DIR/fits/*.pkl (default /tmp/inputdrop) into a markdown table (stdout) and summary.json."""
import itertools
import json
import os
import pickle
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
WORKDIR = Path(os.environ.get("EXPLAIN_TRAINING_DIR", "/tmp/inputdrop"))
import explain as ex  # noqa: E402

FITS = WORKDIR / "fits"
METHODS = ["gxi_logsoftmax", "ig_logsoftmax", "gate", "wilcoxon"]
KS = (5, 10, 20)


def load():
    recs = defaultdict(list)
    for p in sorted(FITS.glob("*.pkl")):
        r = pickle.loads(p.read_bytes())
        recs[r["config"]].append(r)
    return recs


def tci(v):
    return ex.t_interval(v)


def summarise(recs, order, seeds=None):
    rows = {}
    for cfg in order:
        rs = [r for r in recs.get(cfg, []) if seeds is None or r["seed"] in seeds]
        if not rs:
            continue
        sd = sorted({r["seed"] for r in rs})
        donors = sorted({r["donor"] for r in rs})
        # only seeds present for both donors
        sd = [s for s in sd if all(any(r["seed"] == s and r["donor"] == d for r in rs)
                                   for d in donors)]
        get = {(r["donor"], r["seed"]): r for r in rs}
        per_seed = lambda f: np.array([np.mean([f(get[(d, s)]) for d in donors]) for s in sd])
        out = {"seeds": sd, "donors": donors,
               "val_f1": per_seed(lambda r: r["val_f1"]).tolist(),
               "val_acc": per_seed(lambda r: r["val_acc"]).tolist(),
               "fit_s": float(np.median([r["fit_seconds"] for r in rs])),
               "epochs": float(np.median([r["epochs"] for r in rs])),
               "methods": {}}
        for m in METHODS:
            mo = {}
            mo["p5"] = per_seed(lambda r: r["p5"][m]["mean"]).tolist()
            mo["p5_donor"] = {d: float(np.mean([get[(d, s)]["p5"][m]["mean"] for s in sd]))
                              for d in donors}
            mo["aok"] = per_seed(lambda r: np.mean([r["faith"][m][k][0] for k in KS])).tolist()
            mo["aok_p"] = per_seed(lambda r: np.mean([r["faith"][m][k][1] for k in KS])).tolist()
            rho, jac = [], []
            for d in donors:
                for a, b in itertools.combinations(sd, 2):
                    x, y = get[(d, a)]["rankings"][m]["prot"], get[(d, b)]["rankings"][m]["prot"]
                    rr, jj = ex.stability(x, y, range(x.shape[1]))
                    rho.append(rr)
                    jac.append(jj)
            mo["rho"], mo["jac"] = float(np.nanmean(rho)), float(np.nanmean(jac))
            out["methods"][m] = mo
        out["aok_random"] = per_seed(lambda r: np.mean([r["faith"]["random"][k][0]
                                                        for k in KS])).tolist()
        rows[cfg] = out
    return rows


def pm(v):
    v = np.asarray(v)
    return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}"


def table(rows, base="default"):
    lines = ["| config | method | prot P@5 (s1d1 / s1d2) | prot P@5 both | Spearman | J@20 | "
             "val faith AOK | AOK − Wilcoxon [95 % CI] | ΔP@5 vs default [95 % CI] | "
             "val macro F1 | fit s (median) / epochs |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    b = rows.get(base)
    for cfg, o in rows.items():
        wil = np.array(o["methods"]["wilcoxon"]["aok"])
        for m in METHODS:
            mo = o["methods"][m]
            dw = tci(np.array(mo["aok"]) - wil) if m != "wilcoxon" else None
            dp = ""
            if b is not None and cfg != base:
                common = [s for s in o["seeds"] if s in b["seeds"]]
                x = np.array([mo["p5"][o["seeds"].index(s)] for s in common])
                y = np.array([b["methods"][m]["p5"][b["seeds"].index(s)] for s in common])
                t = tci(x - y)
                dp = f"{t[0]:+.3f} [{t[1]:+.3f}, {t[2]:+.3f}]"
            pd_ = mo["p5_donor"]
            lines.append(
                f"| {cfg} | {m} | {' / '.join(f'{pd_[d]:.3f}' for d in o['donors'])} | "
                f"{pm(mo['p5'])} | {mo['rho']:.3f} | {mo['jac']:.3f} | {pm(mo['aok'])} | "
                + (f"{dw[0]:+.3f} [{dw[1]:+.3f}, {dw[2]:+.3f}]" if dw else "") + f" | {dp} | "
                + (f"{pm(o['val_f1'])} | {o['fit_s']:.1f} / {o['epochs']:.0f}"
                   if m == METHODS[0] else " | ") + " |")
    return "\n".join(lines)


def f1_table(rows, base="default"):
    b = rows[base]
    lines = ["| config | seeds | val macro F1 | Δ F1 vs default, paired [95 % CI] | val accuracy | "
             "random AOK | fit s median | epochs median |", "|---|---|---|---|---|---|---|---|"]
    for cfg, o in rows.items():
        common = [s for s in o["seeds"] if s in b["seeds"]]
        x = np.array([o["val_f1"][o["seeds"].index(s)] for s in common])
        y = np.array([b["val_f1"][b["seeds"].index(s)] for s in common])
        t = tci(x - y)
        lines.append(f"| {cfg} | {len(o['seeds'])} | {pm(o['val_f1'])} | "
                     f"{t[0]:+.3f} [{t[1]:+.3f}, {t[2]:+.3f}] | {pm(o['val_acc'])} | "
                     f"{pm(o['aok_random'])} | {o['fit_s']:.1f} | {o['epochs']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    recs = load()
    order = [c for c in ["default", "idrop0.2", "idrop0.5", "idrop0.8", "sparsity0", "wd1e-3",
                         "idrop0.2_enc", "idrop0.5_enc"] if c in recs] + sorted(c for c in recs if "+" in c)
    seeds = None if len(sys.argv) < 2 else [int(s) for s in sys.argv[1].split(",")]
    rows = summarise(recs, order, seeds)
    print(table(rows))
    print()
    print(f1_table(rows))
    (WORKDIR / "summary.json").write_text(json.dumps(rows, indent=1))
