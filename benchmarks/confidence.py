"""Issue 19: is ``obs["mmdyn_certainty"]`` a probability you can act on?

Three parts, all with the package defaults (``tl.fit(train, "cell_type", seed=s,
attribution=False)``), one torch thread per process:

1. **Calibration, BMMC** (the 13 classes with >= 10 cells, as ``benchmarks/bmmc.py``): for each
   seed, fit on one donor and predict the other, both directions, the two query donors pooled
   (cells of the model's classes). For the certainty and for the raw highest class
   probability: ECE (15 equal-mass bins), its noise floor (the mean ECE of a perfectly
   calibrated predictor with the same certainties: outcomes drawn as Bernoulli(certainty), 50
   draws), AURC, accuracy at 90 % coverage and AUROC for a correct call. The same for an
   RNA-only query (the protein modality removed) against the RNA+protein model.
2. **Per-modality certainty, BMMC** (same fits): per modality, Spearman of
   ``obsm["mmdyn_modality_certainty"]`` with the modality classifier's true class probability
   (``obsm["mmdyn_tcp_true"]``) and AUROC for the modality's own call being right, against
   the modality classifier's own (uncalibrated) highest probability.
3. **Unknown cell types, pbmc10k** (coarse ``cell_type`` without HSC, 5 classes, all with >= 50
   cells): per seed one stratified 2/3-1/3 split; each class in turn removed from the
   training part; positives = its query cells, negatives = the other classes' query cells,
   score = 1 - certainty. Peers on the same cells: a class-balanced logistic regression
   (standardised prepared RNA + protein, C by 3-fold CV on the training part) and scANVI
   (``scvi.model.SCANVI.from_scvi_model`` of one scVI model per seed, trained on the RNA counts
   of the seed's training and query cells; the held-out class's training cells are
   unlabelled, like the query cells; fixed epoch caps below),
   score = 1 - highest class probability. Per class and the mean.
4. **Whole lineages left out, BMMC** (report only): B cells, erythroid cells or monocytes removed
   from one donor's training cells, flagged among the other donor's cells (3 seeds, both
   directions); the regression as the peer (scANVI is not run here).

Usage::

    export MMDYN_SC_DATA_DIR=/work/shared/data OMP_NUM_THREADS=1
    python benchmarks/confidence.py                    # writes results/confidence.{md,json}
    python benchmarks/confidence.py --quick            # 1 seed, 1 held-out class, no file
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _harness import add_seeds_argument, quiet_process  # noqa: E402
from explain import load_bmmc, load_pbmc10k  # noqa: E402  (the cells of explain.py)

DONORS = ("s1d1", "s1d2")
SCVI_EPOCHS, SCANVI_EPOCHS = 50, 20
FLOOR_DRAWS = 50


# ============================================================================ helpers
def noise_floor(certainty, draws=FLOOR_DRAWS, seed=0):
    """Mean ECE of outcomes drawn as Bernoulli(certainty): what perfect calibration scores."""
    from mmdyn_sc._calibration import expected_calibration_error

    rng = np.random.default_rng(seed)
    return float(np.mean([expected_calibration_error(certainty, rng.random(len(certainty))
                                                     < certainty) for _ in range(draws)]))


def scores(certainty, correct):
    from mmdyn_sc._calibration import calibration_report

    rep = calibration_report(certainty, correct)
    rep["ece_floor"] = noise_floor(np.asarray(certainty, float))
    return rep


def spearman(a, b):
    from scipy.stats import spearmanr

    keep = np.isfinite(a) & np.isfinite(b)
    return float(spearmanr(a[keep], b[keep])[0])


# ============================================================================ BMMC
def bmmc_seed(mdata, seed):
    import mudata as md

    import mmdyn_sc as ms
    from mmdyn_sc._calibration import auroc

    pooled = {k: [] for k in ("cert", "maxp", "correct", "cert_rna", "maxp_rna",
                              "correct_rna")}
    per_mod = {}
    for train_donor in DONORS:
        train = mdata[mdata.obs["batch"] == train_donor].copy()
        query = mdata[mdata.obs["batch"] != train_donor].copy()
        model = ms.tl.fit(train, "cell_type", seed=seed, enable_progress_bar=False,
                          attribution=False)
        ms.tl.predict(query, model, attribution=False)
        classes = list(model.classes_)
        known = query.obs["cell_type"].astype(str).isin(classes).to_numpy()
        truth = query.obs["cell_type"].astype(str).to_numpy()
        proba = query.obsm["mmdyn_proba"].to_numpy()
        predicted = np.asarray(classes)[proba.argmax(1)]
        pooled["cert"].append(query.obs["mmdyn_certainty"].to_numpy()[known])
        pooled["maxp"].append(proba.max(1)[known])
        pooled["correct"].append((predicted == truth)[known])
        # RNA-only query against the RNA+protein model
        rna_only = md.MuData({"rna": query["rna"].copy()})
        rna_only.obs["cell_type"] = query.obs["cell_type"].to_numpy()
        ms.tl.predict(rna_only, model, attribution=False)
        p_rna = rna_only.obsm["mmdyn_proba"].to_numpy()
        pooled["cert_rna"].append(rna_only.obs["mmdyn_certainty"].to_numpy()[known])
        pooled["maxp_rna"].append(p_rna.max(1)[known])
        pooled["correct_rna"].append((np.asarray(classes)[p_rna.argmax(1)] == truth)[known])
        # per-modality certainty
        result = model.infer(query)
        codes = np.array([classes.index(t) if t in classes else -1 for t in truth])
        tcp = query.obsm["mmdyn_tcp_true"]
        mod_cert = query.obsm["mmdyn_modality_certainty"]
        for m, mod in enumerate(model.modalities_):
            rows = known & result.present[:, m]
            own = result.modality_proba[m][rows]
            entry = per_mod.setdefault(mod, {k: [] for k in ("cert", "maxp", "tcp", "right")})
            entry["cert"].append(mod_cert[mod].to_numpy()[rows])
            entry["maxp"].append(own.max(1))
            entry["tcp"].append(tcp[mod].to_numpy()[rows])
            entry["right"].append(own.argmax(1) == codes[rows])
    cat = {k: np.concatenate(v) for k, v in pooled.items()}
    out = {"certainty": scores(cat["cert"], cat["correct"]),
           "max_probability": scores(cat["maxp"], cat["correct"]),
           "rna_only_certainty": scores(cat["cert_rna"], cat["correct_rna"]),
           "rna_only_max_probability": scores(cat["maxp_rna"], cat["correct_rna"]),
           "modalities": {}}
    for mod, entry in per_mod.items():
        e = {k: np.concatenate(v) for k, v in entry.items()}
        out["modalities"][mod] = {
            # each direction's model on its own query: a calibration is per model
            "certainty_spearman_tcp_within": float(np.mean(
                [spearman(c, t) for c, t in zip(entry["cert"], entry["tcp"], strict=True)])),
            "max_probability_spearman_tcp_within": float(np.mean(
                [spearman(c, t) for c, t in zip(entry["maxp"], entry["tcp"], strict=True)])),
            "certainty_spearman_tcp": spearman(e["cert"], e["tcp"]),
            "max_probability_spearman_tcp": spearman(e["maxp"], e["tcp"]),
            "certainty_auroc_right": auroc(e["cert"], e["right"]),
            "max_probability_auroc_right": auroc(e["maxp"], e["right"]),
            "accuracy": float(e["right"].mean()), "n_cells": int(len(e["right"])),
        }
    return out


# ============================================================================ unknown types
def lr_max_probability(train, query):
    sys.path.insert(0, str(HERE))
    from _harness import fit_lr

    def features(m):
        from scipy import sparse

        blocks = [m[mod].layers["mmdyn_prepared"] for mod in ("rna", "prot")]
        return sparse.hstack([sparse.csr_matrix(b) for b in blocks]).toarray()

    search, _, c_value = fit_lr(features(train), train.obs["cell_type"].astype(str).to_numpy(),
                                np.logspace(-3, -1, 3))
    return search.predict_proba(features(query)).max(1), float(c_value)


def pbmc10k_split(seed):
    """pbmc10k, its ``cell_type`` labels and the seed's stratified 2/3 - 1/3 split."""
    from sklearn.model_selection import StratifiedShuffleSplit

    mdata = load_pbmc10k()
    y = mdata.obs["cell_type"].astype(str).to_numpy()
    tr, te = next(StratifiedShuffleSplit(1, train_size=2 / 3, random_state=seed)
                  .split(np.zeros(len(y)), y))
    return mdata, y, tr, te


def scanvi_job(args):
    """scANVI's highest probability on the query cells of one seed, for every held-out class.

    One unsupervised scVI model (``SCVI_EPOCHS``) on the RNA counts of the seed's training and
    query cells serves every held-out class: each class's scANVI model
    (``SCANVI.from_scvi_model``, ``SCANVI_EPOCHS``) gets the labels of the training cells
    with that class's training cells unlabelled, like the query cells. (scANVI thus sees the
    held-out class's training cells unlabelled, cells the mmdyn fit never sees; a help to the
    peer, not to us.)
    """
    seed, classes = args
    quiet_process(1)
    import scvi

    from mmdyn_sc._calibration import auroc

    mdata, y, tr, te = pbmc10k_split(seed)
    rna = mdata["rna"][np.r_[tr, te]].copy()
    rna.X = rna.layers["counts"]
    query = np.r_[np.zeros(len(tr), bool), np.ones(len(te), bool)]
    truth = y[np.r_[tr, te]]
    t0 = time.perf_counter()
    scvi.settings.seed = seed
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scvi.model.SCVI.setup_anndata(rna)
        vae = scvi.model.SCVI(rna, n_latent=10)
        vae.train(max_epochs=SCVI_EPOCHS, enable_progress_bar=False)
        scvi_seconds = time.perf_counter() - t0
        for held in classes:
            t1 = time.perf_counter()
            scvi.settings.seed = seed
            column = f"label_{held}"
            rna.obs[column] = np.where(query | (truth == held), "Unknown", truth)
            lvae = scvi.model.SCANVI.from_scvi_model(vae, "Unknown", labels_key=column)
            lvae.train(max_epochs=SCANVI_EPOCHS, enable_progress_bar=False)
            soft = lvae.predict(rna[query], soft=True).to_numpy()
            out[held] = {"scanvi": auroc(1 - soft.max(1), truth[query] == held),
                         "scanvi_seconds": time.perf_counter() - t1 + scvi_seconds / len(classes)}
            print(f"[scANVI seed {seed} held {held}] {out[held]['scanvi']:.3f}", flush=True)
    return seed, out


def unknown_job(args):
    """One (seed, held-out class) of part 3, in its own process."""
    seed, held = args
    quiet_process(1)
    import mmdyn_sc as ms
    from mmdyn_sc._calibration import auroc

    mdata, y, tr, te = pbmc10k_split(seed)
    train = mdata[tr[y[tr] != held]].copy()
    train.obs["cell_type"] = train.obs["cell_type"].cat.remove_unused_categories()
    query = mdata[te].copy()
    positive = query.obs["cell_type"].astype(str).to_numpy() == held
    t0 = time.perf_counter()
    model = ms.tl.fit(train, "cell_type", seed=seed, enable_progress_bar=False,
                      attribution=False)
    ms.tl.predict(query, model, attribution=False)
    fit_s = time.perf_counter() - t0
    cert = query.obs["mmdyn_certainty"].to_numpy()
    maxp = query.obsm["mmdyn_proba"].to_numpy().max(1)
    rec = {"seed": seed, "held": held, "n_positive": int(positive.sum()),
           "n_negative": int((~positive).sum()), "fit_seconds": fit_s,
           "certainty": auroc(1 - cert, positive), "max_probability": auroc(1 - maxp, positive),
           "mean_certainty_held": float(cert[positive].mean()),
           "mean_certainty_known": float(cert[~positive].mean())}
    t0 = time.perf_counter()
    lr_p, rec["lr_C"] = lr_max_probability(train, query)
    rec["lr"] = auroc(1 - lr_p, positive)
    rec["lr_seconds"] = time.perf_counter() - t0
    print(f"[unknown seed {seed} held {held}] certainty {rec['certainty']:.3f} max p "
          f"{rec['max_probability']:.3f} LR {rec['lr']:.3f}", flush=True)
    return rec


def unknown_records(seeds, classes, n_jobs, with_scanvi):
    """Part 3: the mmdyn/regression jobs and the per-seed scANVI jobs, in one process pool.

    The long scANVI jobs are submitted first so that the short ones fill the other worker.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: forking a process that already runs OpenMP threads is unsafe
    with ProcessPoolExecutor(n_jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        peer = [pool.submit(scanvi_job, (s, classes)) for s in seeds] if with_scanvi else []
        ours = [pool.submit(unknown_job, (s, h)) for s in seeds for h in classes]
        records = [f.result() for f in ours]
        scanvi = dict(f.result() for f in peer)
    for rec in records:
        rec.update(scanvi.get(rec["seed"], {}).get(rec["held"], {}))
    return records


# ============================================================================ BMMC lineages
#: Part 4 (report only): whole lineages left out of BMMC training.
LINEAGES = {"B cells": ("Naive CD20+ B IGKC-", "Naive CD20+ B IGKC+", "Transitional B"),
            "erythroid": ("Normoblast", "Reticulocyte"),
            "monocytes": ("CD14+ Mono",)}


def lineage_records(seeds):
    """Part 4: each lineage left out of one donor's training cells, flagged in the other."""
    import mmdyn_sc as ms
    from mmdyn_sc._calibration import auroc

    mdata = load_bmmc()
    records = []
    for seed in seeds:
        for train_donor in DONORS:
            for lineage, members in LINEAGES.items():
                labels = mdata.obs["cell_type"].astype(str)
                train = mdata[(mdata.obs["batch"] == train_donor).to_numpy()
                              & ~labels.isin(members).to_numpy()].copy()
                train.obs["cell_type"] = train.obs["cell_type"].cat.remove_unused_categories()
                query = mdata[(mdata.obs["batch"] != train_donor).to_numpy()].copy()
                model = ms.tl.fit(train, "cell_type", seed=seed, enable_progress_bar=False,
                                  attribution=False)
                ms.tl.predict(query, model, attribution=False)
                positive = query.obs["cell_type"].astype(str).isin(members).to_numpy()
                cert = query.obs["mmdyn_certainty"].to_numpy()
                maxp = query.obsm["mmdyn_proba"].to_numpy().max(1)
                lr_p, _ = lr_max_probability(train, query)
                records.append({"seed": seed, "train": train_donor, "lineage": lineage,
                                "n_positive": int(positive.sum()),
                                "certainty": auroc(1 - cert, positive),
                                "max_probability": auroc(1 - maxp, positive),
                                "lr": auroc(1 - lr_p, positive)})
                print(f"[lineage seed {seed} {train_donor} {lineage}] "
                      f"certainty {records[-1]['certainty']:.3f} max p "
                      f"{records[-1]['max_probability']:.3f} LR {records[-1]['lr']:.3f}",
                      flush=True)
    return records


# ============================================================================ report
def mean_sd(values):
    v = np.asarray(values, float)
    return f"{np.nanmean(v):.3f} ± {np.nanstd(v):.3f}"


def t_interval(values):
    from scipy import stats

    v = np.asarray(values, float)
    if len(v) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
    return float(v.mean() - half), float(v.mean() + half)


def markdown(res):
    meta = res["meta"]
    lines = ["# Certainty you can act on (`benchmarks/confidence.py`, issue 19)", "",
             f"Command: `{meta['command']}`; {meta['date']}; total wall "
             f"{meta['wall_seconds']:.0f} s; python {meta['python']}, {meta['cpus']} CPUs, one "
             "torch thread per process. Shared machine: timings indicative.", ""]
    if "bmmc" in res:
        bm = res["bmmc"]
        lines += [f"## 1. Calibration, BMMC (seeds {meta['seeds']}, both directions pooled, "
                  "cells of the model's classes)", "",
                  "mean ± sd over seeds.", "",
                  "| query | score | ECE (15 equal-mass bins) | ECE noise floor | AURC | "
                  "accuracy at 90 % coverage | AUROC correct call | accuracy |",
                  "|---|---|---|---|---|---|---|---|"]
        for query, pair in (("RNA + protein", ("certainty", "max_probability")),
                            ("RNA only", ("rna_only_certainty", "rna_only_max_probability"))):
            for key in pair:
                vals = [r[key] for r in bm]
                lines.append(
                    f"| {query} | {'certainty' if 'certainty' in key else 'highest probability'}"
                    f" | {mean_sd([v['ece'] for v in vals])} | "
                    f"{mean_sd([v['ece_floor'] for v in vals])} | "
                    f"{mean_sd([v['aurc'] for v in vals])} | "
                    f"{mean_sd([v['accuracy_at_90_coverage'] for v in vals])} | "
                    f"{mean_sd([v['auroc_correct'] for v in vals])} | "
                    f"{mean_sd([v['accuracy'] for v in vals])} |")
        ece_c = np.mean([r["certainty"]["ece"] for r in bm])
        ece_p = np.mean([r["max_probability"]["ece"] for r in bm])
        au_c = np.mean([r["certainty"]["auroc_correct"] for r in bm])
        au_p = np.mean([r["max_probability"]["auroc_correct"] for r in bm])
        lines += ["", "Targets (RNA + protein query):",
                  f"- certainty ECE <= 0.05 and <= half the highest probability's: {ece_c:.3f} "
                  f"vs {ece_p:.3f} / 2 = {ece_p / 2:.3f} → "
                  f"**{'PASS' if ece_c <= 0.05 and ece_c <= ece_p / 2 else 'MISS'}**",
                  f"- AUROC for a correct call >= the highest probability's - 0.01: {au_c:.3f} vs "
                  f"{au_p:.3f} → **{'PASS' if au_c >= au_p - 0.01 else 'MISS'}**", "",
                  "## 2. Per-modality certainty, BMMC (same fits and cells)", "",
                  "Spearman over the two directions' query cells pooled (the target's "
                  "measure), and within each direction's query (mean of the two).", "",
                  "| modality | Spearman with its TCP: certainty | highest probability | "
                  "within a direction: certainty | highest probability | "
                  "AUROC its call right: certainty | highest probability | its accuracy |",
                  "|---|---|---|---|---|---|---|---|"]
        for mod in bm[0]["modalities"]:
            vals = [r["modalities"][mod] for r in bm]
            lines.append(f"| {mod} | {mean_sd([v['certainty_spearman_tcp'] for v in vals])} | "
                         f"{mean_sd([v['max_probability_spearman_tcp'] for v in vals])} | "
                         f"{mean_sd([v['certainty_spearman_tcp_within'] for v in vals])} | "
                         f"{mean_sd([v['max_probability_spearman_tcp_within'] for v in vals])} | "
                         f"{mean_sd([v['certainty_auroc_right'] for v in vals])} | "
                         f"{mean_sd([v['max_probability_auroc_right'] for v in vals])} | "
                         f"{mean_sd([v['accuracy'] for v in vals])} |")
        lines += ["", "Targets: Spearman >= the highest probability's - 0.02 and AUROC >= 0.75, "
                  "per modality:"]
        for mod in bm[0]["modalities"]:
            vals = [r["modalities"][mod] for r in bm]
            rho = np.mean([v["certainty_spearman_tcp"] for v in vals])
            rho_p = np.mean([v["max_probability_spearman_tcp"] for v in vals])
            au = np.mean([v["certainty_auroc_right"] for v in vals])
            ok = rho >= rho_p - 0.02 and au >= 0.75
            lines.append(f"- {mod}: Spearman {rho:.3f} vs {rho_p:.3f}, AUROC {au:.3f} → "
                         f"**{'PASS' if ok else 'MISS'}**")
        lines.append("")
    if "unknown" in res:
        un = res["unknown"]
        peers = ["certainty", "max_probability", "lr"] + (["scanvi"] if "scanvi" in un[0]
                                                            else [])
        names = {"certainty": "mmdyn certainty", "max_probability": "mmdyn highest probability",
                 "lr": "logistic regression, highest probability",
                 "scanvi": f"scANVI, highest probability ({SCVI_EPOCHS} + {SCANVI_EPOCHS} "
                           "epochs; one scVI per seed)"}
        held = sorted({r["held"] for r in un})
        lines += [f"## 3. Unknown cell types, pbmc10k (seeds {sorted({r['seed'] for r in un})}, "
                  "each class held out in turn)", "",
                  "AUROC for flagging the held-out class's query cells by low certainty "
                  "(0.5 = chance); mean ± sd over seeds.", "",
                  "| score | " + " | ".join(held) + " | mean |",
                  "|---|" + "---|" * (len(held) + 1)]
        for p in peers:
            per_class = [mean_sd([r[p] for r in un if r["held"] == h]) for h in held]
            per_seed_mean = [np.mean([r[p] for r in un if r["seed"] == s])
                             for s in sorted({r["seed"] for r in un})]
            lines.append(f"| {names[p]} | " + " | ".join(per_class)
                         + f" | **{mean_sd(per_seed_mean)}** |")
        def mean_of(name, h):
            return np.mean([r[name] for r in un if r["held"] == h])

        lines += ["", "Mean certainty of the held-out class's cells vs the others' (mean over "
                  "seeds): " + ", ".join(
                      f"{h}: {mean_of('mean_certainty_held', h):.2f} vs "
                      f"{mean_of('mean_certainty_known', h):.2f}" for h in held), ""]
        mean_c = np.mean([r["certainty"] for r in un])
        diffs = {p: [np.mean([r["certainty"] - r[p] for r in un if r["seed"] == s])
                     for s in sorted({r["seed"] for r in un})] for p in peers[1:]}
        peer_diffs = {p: d for p, d in diffs.items() if p in ("lr", "scanvi")}
        met = mean_c >= 0.85 and all(np.mean(d) > 0 for d in peer_diffs.values())
        lines.append(f"Target: mean AUROC >= 0.85 and above both peers: {mean_c:.3f}; "
                     + "; ".join(f"minus {names[p]}: {np.mean(d):+.3f} (95 % t-interval over "
                                 f"seeds [{t_interval(d)[0]:+.3f}, {t_interval(d)[1]:+.3f}])"
                                 for p, d in peer_diffs.items())
                     + f" → **{'PASS' if met else 'MISS'}**")
        lines.append("")
    if "lineages" in res:
        rec = res["lineages"]
        lineages = list(LINEAGES)
        lines += ["## 4. Whole lineages left out, BMMC (report only)", "",
                  "Each lineage's cells removed from one donor's training cells; AUROC for "
                  "flagging them among the other donor's cells; mean ± sd over seeds and the two "
                  "directions. Lineages: " + "; ".join(
                      f"{k}: {', '.join(v)}" for k, v in LINEAGES.items()) + ".", "",
                  "| score | " + " | ".join(lineages) + " |", "|---|" + "---|" * len(lineages)]
        for key, name in (("certainty", "mmdyn certainty"),
                          ("max_probability", "mmdyn highest probability"),
                          ("lr", "logistic regression, highest probability")):
            lines.append(f"| {name} | " + " | ".join(
                mean_sd([r[key] for r in rec if r["lineage"] == g]) for g in lineages) + " |")
        lines.append("")
    return "\n".join(lines)


# ============================================================================ main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_seeds_argument(parser, 5, what="BMMC seeds (part 1-2)")
    parser.add_argument("--unknown-seeds", type=int, default=3)
    parser.add_argument("--parts", default="bmmc,unknown,lineages")
    parser.add_argument("--no-scanvi", action="store_true")
    parser.add_argument("--jobs", type=int, default=2, help="processes for part 3")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed-offset", type=int, default=0, metavar="K",
                        help="add K to every seed (a confirmation on seeds never looked at)")
    parser.add_argument("--out", default="confidence",
                        help="results/<OUT>.{md,json} (default confidence)")
    args = parser.parse_args(argv)
    args.seeds = [s + args.seed_offset for s in args.seeds]
    results_md = HERE / "results" / f"{args.out}.md"
    results_json = HERE / "results" / f"{args.out}.json"
    quiet_process(1)
    t0 = time.perf_counter()
    parts = args.parts.split(",")
    unknown_seeds = [s + args.seed_offset for s in range(args.unknown_seeds)]
    res = {}
    if "bmmc" in parts:
        mdata = load_bmmc()
        res["bmmc"] = []
        for seed in ([0] if args.quick else args.seeds):
            res["bmmc"].append(bmmc_seed(mdata, seed))
            r = res["bmmc"][-1]
            print(f"[bmmc seed {seed}] ECE certainty {r['certainty']['ece']:.3f} max p "
                  f"{r['max_probability']['ece']:.3f}; AUROC {r['certainty']['auroc_correct']:.3f}"
                  f" vs {r['max_probability']['auroc_correct']:.3f}", flush=True)
    if "lineages" in parts:
        res["lineages"] = lineage_records([0] if args.quick else unknown_seeds)
    if "unknown" in parts:
        classes = ["NK cells"] if args.quick else sorted(
            load_pbmc10k().obs["cell_type"].astype(str).unique())
        seeds = [0] if args.quick else unknown_seeds
        res["unknown"] = unknown_records(seeds, classes, args.jobs, not args.no_scanvi)
    command = "python benchmarks/confidence.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    meta = {"command": command.strip(), "date": time.strftime("%Y-%m-%d"),
            "wall_seconds": time.perf_counter() - t0, "python": platform.python_version(),
            "cpus": os.cpu_count(), "seeds": [0] if args.quick else args.seeds}
    if not args.quick and results_json.exists():  # one part at a time: keep the others
        earlier = json.loads(results_json.read_text())
        res = {**{k: v for k, v in earlier.items() if k not in res and k != "meta"}, **res}
        runs = earlier["meta"].get("runs", [earlier["meta"]])
    else:
        runs = []
    res["meta"] = {**meta, "runs": [*runs, {**meta, "parts": parts}],
                   "wall_seconds": sum(r["wall_seconds"] for r in [*runs, meta])}
    res["meta"]["command"] = " ; ".join(r["command"] for r in res["meta"]["runs"])
    text = markdown(res)
    print(text)
    if not args.quick:
        results_json.write_text(json.dumps(res, indent=1, default=float))
        results_md.write_text(text + "\n")
        print(f"wrote {results_md}")


if __name__ == "__main__":
    main()
