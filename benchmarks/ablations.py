"""Ablations of mmdyn_sc against the study's winner (class-balanced logistic regression).

"The table that decides": for each dataset, macro F1, balanced accuracy and weighted F1
(mean ± sd over runs) of

- ``LR``: class-balanced logistic regression on the concatenated ``layers["mmdyn_prepared"]``
  (log-normalised RNA + per-cell CLR protein), standardised on the training cells, C chosen by
  3-fold stratified CV (macro F1) on the training cells only (the study's winner);
  ``LR rna`` / ``LR prot``: the same on one modality;
- ``MM static`` (FI off, MI off), ``FI only``, ``MI only (<confidence>)``, ``MM dyn
  (<confidence>)`` (FI and MI) for every confidence option, and MI only / MM dyn with
  ``modality_dropout=0.3`` (``+ mdrop``);
- ``MM rna only`` / ``MM prot only``: mmdyn_sc trained on one modality (the "model trained
  without it" reference), with the confidence option of the split's validation-chosen variant;
- ``default``: the MM dyn variant that ``tl.fit``'s default recipe is (``RECIPES["default"]``);
  that recipe is chosen on the validation macro F1 of both datasets' runs, never on test cells;
- ``MM dyn (val-chosen)``: per split, the MM dyn variant (confidence option x modality
  dropout) with the highest mean validation macro F1 over that split's seeds. Validation
  cells are the 10 % (per class) of the *training* cells that ``tl.fit``'s default recipe
  holds out for early stopping (``uns["mmdyn"]["metrics"]["validation"]``); test cells are
  never used. ``MI (chosen)``: the same choice among the MI-only variants (confidence
  option x modality dropout, the same space as ``MM dyn (val-chosen)``; until 2026-12-01 it
  was among the confidence options without modality dropout only, which the report still
  gives for comparison).

Every multimodal model (and LR, with the missing block set to its training mean) is also
scored with one modality removed at test time (the query MuData lacks it): conditions
``-rna`` / ``-prot``. If the package cannot predict without a modality yet, the cell is
recorded as "pending" instead of failing.

Datasets and protocol:

- ``bmmc``: ``mmdyn_sc.datasets.bmmc_cite()``, classes with >= 10 cells (456 cells, 13
  classes), train on one donor and test on the other, both ways, ``--seeds`` seeds each
  (LR is deterministic: one fit per direction, repeated for pairing).
- ``pbmc10k``: ``mmdyn_sc.datasets.pbmc10k_cite()``, ``cell_type_fine`` with >= 10 cells
  (6,807 cells, 13 classes), ``--folds``-fold stratified CV (``random_state=0``), fold k
  fitted with seed k. Per fold, the 1,000 most variable genes (scanpy
  ``highly_variable_genes``, flavour "seurat", on the prepared layer of the *training* cells
  only) are used by every method (``mask_var`` for mmdyn_sc); all 14 proteins.

Every method is scored by ``mmdyn_sc._metrics.classification_metrics`` on the same test cells
(its macro F1 averages over the classes that occur in the test labels or the predictions).

Usage::

    MMDYN_SC_DATA_DIR=/work/shared/data python benchmarks/ablations.py --dataset bmmc
    python benchmarks/ablations.py --dataset both --quick          # smoke test, nothing kept
    python benchmarks/ablations.py --dataset pbmc10k --only-folds 0 1
    python benchmarks/ablations.py --dataset bmmc --from-json benchmarks/results/ablations_bmmc.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from _data import LABEL, MIN_CELLS, MODS, N_HVG, features, load, splits
from _harness import (
    add_c_range_argument,
    add_seeds_argument,
    c_grid,
    fit_lr,
    fmt,
    quiet_process,
    score,
)
from _mmfit import PENDING, fit_mm

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CONFIDENCES = ("tcp", "tcp_calibrated", "energy", "pdf")
MDROP = 0.3
CONDITIONS = ("full", "-rna", "-prot")


# ---------------------------------------------------------------------------- methods
def method_specs() -> dict[str, dict]:
    """name -> how to fit it; MM ``fit`` options are passed to ``mmdyn_sc.tl.fit``.

    Every MM variant names its modality dropout: the default recipe's (0.3) must not leak
    into the variants without ``+ mdrop``, MM static or FI only.
    """
    specs = {
        "LR": {"kind": "lr", "mods": MODS},
        "LR rna": {"kind": "lr", "mods": ("rna",)},
        "LR prot": {"kind": "lr", "mods": ("prot",)},
        "MM static": {"kind": "mm", "fit": {"feature_informativeness": False,
                                            "modality_informativeness": False,
                                            "modality_dropout": 0.0}},
        "FI only": {"kind": "mm", "fit": {"feature_informativeness": True,
                                          "modality_informativeness": False,
                                          "modality_dropout": 0.0}},
    }
    for fi, family in ((False, "MI only"), (True, "MM dyn")):
        for drop in (0.0, MDROP):
            for conf in CONFIDENCES:
                name = f"{family} ({conf})" + (" + mdrop" if drop else "")
                specs[name] = {"kind": "mm", "fit": {
                    "feature_informativeness": fi, "modality_informativeness": True,
                    "confidence": conf, "modality_dropout": drop}}
    for mod in MODS:  # confidence: the split's default configuration's (chosen at run time)
        specs[f"MM {mod} only"] = {"kind": "mm_ref", "mods": (mod,)}
    return specs


SPECS = method_specs()
DEFAULT_CANDIDATES = [m for m in SPECS if m.startswith("MM dyn")]  # package default first
MI_CANDIDATES = [m for m in SPECS if m.startswith("MI only")]
#: the earlier MI choice (confidence options without modality dropout), reported alongside
MI_CANDIDATES_NO_MDROP = [f"MI only ({c})" for c in CONFIDENCES]


# ---------------------------------------------------------------------------- fitting
def lr_rows(train, test, mods, c_values):
    """LR rows for ``full`` (and, on both modalities, ``-rna``/``-prot`` by mean imputation)."""
    x_train, x_test = features(train, mods), features(test, mods)
    y_test = test.obs[LABEL].astype(str).to_numpy()
    search, seconds, c = fit_lr(x_train, train.obs[LABEL].astype(str).to_numpy(), c_values)
    common = {"seconds": seconds, "epochs": None, "C": c, "val_f1_macro": None, "tcp": {}}
    rows = [{"condition": "full", "status": "ok", **score(y_test, search.predict(x_test)),
             **common}]
    if len(mods) > 1:  # mean imputation = 0 after the training scaler
        mean = search.best_estimator_.named_steps["standardscaler"].mean_
        start_col = 0
        for mod in mods:
            width = features(train, (mod,)).shape[1]
            x = x_test.copy()
            x[:, start_col:start_col + width] = mean[start_col:start_col + width]
            rows.append({"condition": f"-{mod}", "status": "ok",
                         **score(y_test, search.predict(x)), **common})
            start_col += width
    return rows


# ---------------------------------------------------------------------------- selection
def choose(records, split, candidates):
    """Candidate with the highest mean validation macro F1 over the split's seeds."""
    best, best_score, table = None, -np.inf, {}
    for name in candidates:
        vals = [r["val_f1_macro"] for r in records
                if r["split"] == split and r["method"] == name and r["condition"] == "full"
                and r.get("val_f1_macro") is not None]
        if not vals:
            continue
        table[name] = float(np.mean(vals))
        if table[name] > best_score:  # ties: the earlier candidate (package default first)
            best, best_score = name, table[name]
    return best, table


def recipe_default_method() -> str:
    """The MM dyn variant that ``tl.fit``'s ``"default"`` recipe is (confidence, dropout)."""
    from mmdyn_sc.tl import RECIPES

    recipe = RECIPES["default"]
    drop = recipe["modality_dropout"]
    name = f"MM dyn ({recipe['confidence']})" + (" + mdrop" if drop else "")
    if drop not in (0, MDROP) or name not in SPECS:
        raise ValueError(f"tl.fit's default recipe ({recipe['confidence']}, modality_dropout "
                         f"{drop}) is not one of the benchmarked variants")
    return name


VAL_CHOSEN = "MM dyn (val-chosen)"
DERIVED = ("default", VAL_CHOSEN, "MI (chosen)")


def with_derived(records):
    """Add the derived rows: ``default`` (copies of the variant ``tl.fit``'s default recipe
    is), ``MM dyn (val-chosen)`` and ``MI (chosen)`` (copies of the variant with the best
    validation macro F1 per split)."""
    out = [r for r in records if r["method"] not in DERIVED]
    base = list(out)
    default = recipe_default_method()
    out += [{**r, "method": "default", "chosen": default} for r in base
            if r["method"] == default]
    choices = {}
    for split in dict.fromkeys(r["split"] for r in base):
        for derived, candidates in ((VAL_CHOSEN, DEFAULT_CANDIDATES),
                                    ("MI (chosen)", MI_CANDIDATES)):
            best, table, rows = chosen_copies(base, split, candidates, derived)
            choices[(split, derived)] = (best, table)
            out += rows
    return out, choices


def chosen_copies(base, split, candidates, name):
    """``(best, table, rows)``: ``choose``'s answer and the split's rows of the chosen
    variant, renamed ``name`` (none if no candidate was fitted)."""
    best, table = choose(base, split, candidates)
    rows = [] if best is None else [{**r, "method": name, "chosen": best} for r in base
                                    if r["split"] == split and r["method"] == best]
    return best, table, rows


def chosen_minus(records, candidates, reference):
    """Paired macro-F1 points of the per-split validation choice among ``candidates`` minus
    ``reference`` (full condition), as ``with_derived`` would make them."""
    base = [r for r in records if r["method"] not in DERIVED]
    chosen = [row for split in dict.fromkeys(r["split"] for r in base)
              for row in chosen_copies(base, split, candidates, "chosen")[2]]
    return paired(chosen + base, ("chosen", "full"), (reference, "full"))[0]


def validation_ranking(records, candidates):
    """Mean validation macro F1 of each candidate over every run (all splits and seeds)."""
    table = {}
    for name in candidates:
        vals = [r["val_f1_macro"] for r in records if r["method"] == name
                and r["condition"] == "full" and r.get("val_f1_macro") is not None]
        if vals:
            table[name] = float(np.mean(vals))
    return dict(sorted(table.items(), key=lambda kv: -kv[1]))


# ---------------------------------------------------------------------------- report
METRICS = (("f1_macro", "macro F1"), ("balanced_accuracy", "balanced acc"),
           ("f1_weighted", "weighted F1"))


def rows_of(records, method, condition):
    return [r for r in records if r["method"] == method and r["condition"] == condition]


def paired(records, a, b, metric="f1_macro"):
    """Per run (split, seed): a - b in points; None where either is missing or pending."""
    index = {(r["split"], r["seed"]): r for r in rows_of(records, *b) if r["status"] == "ok"}
    diffs, pending = [], 0
    for r in rows_of(records, *a):
        other = index.get((r["split"], r["seed"]))
        if r["status"] != "ok":
            pending += 1
        elif other is not None:
            diffs.append(100 * (r[metric] - other[metric]))
    return np.asarray(diffs), pending


def diff_text(d):
    sd = d.std(ddof=1) if len(d) > 1 else 0.0
    return f"{d.mean():+.1f} ± {sd:.1f} points (n={len(d)})"


def tcp_value(r, mod):
    rep = r.get("tcp", {}).get(mod)
    return None if rep is None else rep.get("relative_error")


def tcp_diff(records, a_method, b_method, mod):
    """Per run: relative TCP error of ``a_method`` minus ``b_method`` (validation cells)."""
    a = {(r["split"], r["seed"]): tcp_value(r, mod) for r in rows_of(records, a_method, "full")}
    b = {(r["split"], r["seed"]): tcp_value(r, mod) for r in rows_of(records, b_method, "full")}
    return np.asarray([a[k] - b[k] for k in a
                       if b.get(k) is not None and a[k] is not None])


def report(dataset, records, meta) -> str:
    records, choices = with_derived(records)
    splits_ = list(dict.fromkeys(r["split"] for r in records))
    methods = [m for m in [*DERIVED, *SPECS] if rows_of(records, m, "full")]
    lines = [f"## {dataset}: {meta.get('title', '')}".rstrip(": "), ""]
    lines.append(meta["protocol"])
    lines.append("")
    lines.append(
        "mean ± sd over runs (run = split x seed; LR is deterministic, repeated per seed). "
        "Conditions: `full` = both modalities at test time; `-rna` / `-prot` = the query "
        "MuData lacks that modality (LR: its standardised block set to the training mean). "
        "'val macro F1' = validation cells of the training data (what the defaults are "
        "chosen on); TCP rel. err. = `mean |t^ - t| / mean t` on those validation cells "
        "(n/a: the option predicts no TCP)."
    )
    lines.append("")
    head = "| method | condition | " + " | ".join(h for _, h in METRICS) + \
           " | val macro F1 | TCP rel. err. rna | TCP rel. err. prot | epochs | fit s |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for method in methods:
        for cond in CONDITIONS:
            rs = rows_of(records, method, cond)
            if not rs:
                continue
            ok = [r for r in rs if r["status"] == "ok"]
            if ok:
                cells = [fmt([r[k] for r in ok]) for k, _ in METRICS]
            else:
                cells = [PENDING] * len(METRICS)
            if cond == "full":
                val = fmt([r.get("val_f1_macro") for r in rs])
                tcps = []
                for mod in MODS:
                    vals = [tcp_value(r, mod) for r in rs]
                    has_mod = any(mod in r.get("tcp", {}) for r in rs)
                    tcps.append(fmt(vals) if any(v is not None for v in vals)
                                else ("n/a" if has_mod else ""))
                epochs = [r["epochs"] for r in rs if r.get("epochs")]
                ep = f"{np.median(epochs):.0f}" if epochs else ""
                secs = f"{np.median([r['seconds'] for r in rs]):.1f}"
            else:
                val, tcps, ep, secs = "", ["", ""], "", ""
            lines.append(f"| {method} | {cond} | " + " | ".join(cells)
                         + f" | {val} | {tcps[0]} | {tcps[1]} | {ep} | {secs} |")
    lines.append("")

    # per split macro F1, full condition
    lines.append("Macro F1 per split (full condition, mean ± sd over seeds):")
    lines.append("")
    lines.append("| method | " + " | ".join(splits_) + " |")
    lines.append("|---|" + "---|" * len(splits_))
    for method in methods:
        cells = [fmt([r["f1_macro"] for r in rows_of(records, method, "full")
                      if r["split"] == s and r["status"] == "ok"]) for s in splits_]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines.append("")

    # choices
    lines.append("Validation choice (per split, mean validation macro F1 over its seeds; "
                 "test cells never used):")
    lines.append("")
    lines.append(f"- `default` is `tl.fit`'s default recipe: **{recipe_default_method()}**. "
                 "Mean validation macro F1 of each MM dyn variant over all runs of this "
                 "dataset (the default is chosen on these, for both datasets): "
                 + ", ".join(f"{k} {v:.3f}" for k, v in
                             validation_ranking(records, DEFAULT_CANDIDATES).items()))
    for split in splits_:
        for derived in (VAL_CHOSEN, "MI (chosen)"):
            best, table = choices.get((split, derived), (None, {}))
            if best is None:
                continue
            ranking = ", ".join(f"{k} {v:.3f}" for k, v in
                                sorted(table.items(), key=lambda kv: -kv[1]))
            lines.append(f"- {split}, {derived}: **{best}** ({ranking})")
    refs = {r["split"]: r.get("options", {}).get("confidence") for r in records
            if r["method"] in ("MM rna only", "MM prot only")}
    if refs:
        lines.append("- single-modality references fitted with the validation-chosen "
                     "variant's confidence option: "
                     + ", ".join(f"{s}: {c}" for s, c in refs.items()))
    lines.append("")

    # targets
    lines.append("### Targets (paired per run, absolute macro-F1 points, mean ± sd)")
    lines.append("")
    verdicts = []

    def verdict(name, ok, text):
        v = "pending" if ok is None else ("PASS" if ok else "MISS")
        verdicts.append(v)
        lines.append(f"- {name}: {text} → **{v}**")

    d, _ = paired(records, ("default", "full"), ("LR", "full"))
    verdict("1. default mmdyn_sc macro F1 >= logistic regression",
            bool(d.mean() >= 0) if len(d) else None, "default − LR = "
            + (diff_text(d) if len(d) else "no runs"))
    d, _ = paired(records, ("MI (chosen)", "full"), ("MM static", "full"))
    extra = "; ".join(
        f"{m} − static {diff_text(paired(records, (m, 'full'), ('MM static', 'full'))[0])}"
        for m in MI_CANDIDATES
        if len(paired(records, (m, "full"), ("MM static", "full"))[0]))
    earlier = chosen_minus(records, MI_CANDIDATES_NO_MDROP, "MM static")
    verdict("2. MI (confidence option x modality dropout chosen on validation) >= MM static",
            bool(d.mean() >= 0) if len(d) else None,
            ("MI (chosen) − static = " + diff_text(d) if len(d) else "no runs")
            + (f". The earlier choice among the confidence options without modality "
               f"dropout: {diff_text(earlier)}" if len(earlier) else "")
            + (f". Each option: {extra}" if extra else ""))
    parts, oks = [], []
    for mod, other in (("prot", "rna"), ("rna", "prot")):
        d, pend = paired(records, ("default", f"-{mod}"), (f"MM {other} only", "full"))
        if len(d) and not pend:
            oks.append(bool(d.mean() >= -2))
            parts.append(f"default without {mod} − MM {other} only = {diff_text(d)}")
        else:
            oks.append(None)
            parts.append(f"default without {mod}: "
                         + ("pending (the package could not predict without it)" if pend
                            else "no runs"))
    ok3 = None if any(o is None for o in oks) else all(oks)
    verdict("3. modality removed at test time >= model trained without it − 2 points",
            ok3, "; ".join(parts))
    parts, oks = [], []
    for mod in MODS:
        d = tcp_diff(records, "MM dyn (tcp_calibrated)", "MM dyn (tcp)", mod)
        if len(d):
            oks.append(bool(d.mean() < 0))
            sd = d.std(ddof=1) if len(d) > 1 else 0.0
            parts.append(f"{mod}: tcp_calibrated − tcp = {d.mean():+.3f} ± {sd:.3f} "
                         f"(n={len(d)})")
    verdict("4. predicted-TCP relative error (validation cells, MM dyn) lower for "
            "tcp_calibrated than tcp, every modality",
            (all(oks) if oks else None), "; ".join(parts) or "no runs")
    info = []
    for family in ("MI only", "MM dyn"):
        for drop in ("", " + mdrop"):
            if (family, drop) == ("MM dyn", ""):
                continue
            d = {mod: tcp_diff(records, f"{family} (tcp_calibrated){drop}",
                               f"{family} (tcp){drop}", mod) for mod in MODS}
            if all(len(v) for v in d.values()):
                info.append(f"{family}{drop}: " + ", ".join(
                    f"{mod} {v.mean():+.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}"
                    for mod, v in d.items()))
    if info:
        lines.append("  - same difference (tcp_calibrated − tcp), other families, "
                     "information only: " + "; ".join(info))
    lines.append("")

    # missing-modality gaps for every multimodal method
    ref_names = {"-prot": "MM rna only", "-rna": "MM prot only"}
    if any(rows_of(records, r, "full") for r in ref_names.values()):
        lines.append("Missing modality, every multimodal model: test-time removal minus the "
                     "single-modality mmdyn_sc model (paired, macro-F1 points):")
        lines.append("")
        lines.append("| method | −prot vs MM rna only | −rna vs MM prot only |")
        lines.append("|---|---|---|")
        for method in methods:
            if method in ref_names.values() or method in ("LR rna", "LR prot"):
                continue
            cells = []
            for cond, ref in ref_names.items():
                d, pend = paired(records, (method, cond), (ref, "full"))
                cells.append(PENDING if pend and not len(d) else
                             (diff_text(d) if len(d) else ""))
            if any(cells):
                lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")

    pend = sorted({r["status"] for r in records if r["status"] != "ok"})
    if pend:
        lines.append("Pending cells: " + "; ".join(f"`{p}`" for p in pend[:3]))
        lines.append("")
    for note in meta.get("notes", []):
        lines.append(f"- {note}")
    lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main
def protocol_text(dataset, n_classes, args, splits_run):
    if dataset == "bmmc":
        return (f"BMMC CITE-seq (`bmmc_cite`), {n_classes} classes with >= {MIN_CELLS} cells "
                f"(456 cells); train on one donor, test on the other, both ways; seeds "
                f"{args.seeds if not args.quick else [0]}. All 1,000 genes + "
                "134 proteins.")
    return (f"PBMC 10k CITE-seq (`pbmc10k_cite`), `cell_type_fine`, {n_classes} classes with "
            f">= {MIN_CELLS} cells; {args.folds}-fold stratified CV (random_state 0), folds run: "
            f"{', '.join(splits_run)} (fold k fitted with seed k). Per fold, {N_HVG} highly "
            "variable genes (scanpy, seurat flavour, prepared layer, training cells only) "
            "for every method; all 14 proteins.")


def run(dataset, args, specs, out_json):
    import mmdyn_sc  # noqa: F401

    t0 = time.perf_counter()
    mdata, classes = load(dataset)
    records, split_seconds = [], {}
    if args.resume and out_json.exists():
        saved = json.loads(out_json.read_text())
        records = saved["records"]
        split_seconds = dict(saved["meta"].get("split_seconds", {}))
    done_splits = {r["split"] for r in records}
    seeds = [0] if args.quick else args.seeds
    only = args.only_folds if not args.quick else [0]
    max_epochs = args.max_epochs or (15 if args.quick else None)
    c_values = c_grid(args.lr_c_range)
    splits_run = []
    n_fits, fit_seconds = 0, 0.0

    def log(msg):
        print(f"[{dataset} {time.perf_counter() - t0:7.0f}s] {msg}", file=sys.stderr,
              flush=True)

    def save(final=False):
        meta = {"dataset": dataset, "classes": classes, "splits": splits_run,
                "protocol": protocol_text(dataset, len(classes), args, splits_run),
                "split_seconds": split_seconds,
                "notes": notes(dataset, args, time.perf_counter() - t0, final, splits_run,
                               split_seconds),
                "command": command_line()}
        out_json.parent.mkdir(parents=True, exist_ok=True)
        write_json(out_json, meta, records)
        return meta

    def fit_mm_methods(split, train, test, split_seeds, info, names, ref_conf=None):
        nonlocal n_fits, fit_seconds
        for seed in split_seeds:
            for name in names:
                if SPECS[name]["kind"] == "mm":
                    options, mods = SPECS[name]["fit"], MODS
                else:  # one modality: nothing to drop
                    options = {"confidence": ref_conf, "modality_dropout": 0.0}
                    mods = SPECS[name]["mods"]
                rows = fit_mm(train, test, seed, options, mods, max_epochs)
                n_fits += 1
                fit_seconds += rows[0]["seconds"]
                records.extend({"dataset": dataset, "split": split, "seed": seed,
                                "method": name, "options": dict(options), **r, **info}
                               for r in rows)
                removed = " ".join(f"{r['condition']} " + (f"{r['f1_macro']:.3f}"
                                   if r["status"] == "ok" else PENDING)
                                   for r in rows[1:])
                log(f"{split} seed {seed} {name}: macro F1 {rows[0]['f1_macro']:.3f} "
                    f"{removed} | val {rows[0]['val_f1_macro']:.3f} | "
                    f"{rows[0]['epochs']} epochs {rows[0]['seconds']:.1f}s "
                    f"(mean fit {fit_seconds / n_fits:.1f}s)")

    def reference_confidence(split):
        best, _ = choose(records, split, DEFAULT_CANDIDATES)
        ref_conf = SPECS[best]["fit"]["confidence"] if best else "tcp"
        log(f"{split}: validation-chosen variant {best}; references use "
            f"confidence={ref_conf}")
        return ref_conf

    refs = [m for m in specs if SPECS[m]["kind"] == "mm_ref"]
    refit = [m for m in (args.refit or []) if SPECS[m]["kind"] in ("mm", "mm_ref")]
    for split, train, test, split_seeds, info in splits(dataset, mdata, args.folds, only, seeds):
        splits_run.append(split)
        if split in done_splits and not refit:
            log(f"{split}: already in {out_json}, skipped (--resume)")
            continue
        split_start = time.perf_counter()
        if split in done_splits:  # --refit: replace these methods' rows, keep the others
            log(f"{split}: refitting {', '.join(refit)}")
            records[:] = [r for r in records
                          if not (r["split"] == split and r["method"] in refit)]
            fit_mm_methods(split, train, test, split_seeds, info,
                           [m for m in refit if SPECS[m]["kind"] == "mm"])
            ref_conf = reference_confidence(split)
            stale = {r["method"] for r in records if r["split"] == split
                     and r["method"] in refs and r["options"]["confidence"] != ref_conf}
            redo = [m for m in refs if m in stale or m in refit]
            if redo:  # the references follow the validation-chosen confidence option
                records[:] = [r for r in records
                              if not (r["split"] == split and r["method"] in redo)]
                fit_mm_methods(split, train, test, split_seeds, info, redo, ref_conf)
            split_seconds[split] = (split_seconds.get(split, 0.0)
                                    + time.perf_counter() - split_start)
            save()
            continue
        log(f"{split}: {train.n_obs} training / {test.n_obs} test cells {info}")
        for name in [m for m in specs if SPECS[m]["kind"] == "lr"]:
            rows = lr_rows(train, test, SPECS[name]["mods"], c_values)
            for seed in split_seeds:
                records += [{"dataset": dataset, "split": split, "seed": seed,
                             "method": name, **r, **info} for r in rows]
            log(f"{split} {name}: C={rows[0]['C']:g} macro F1 {rows[0]['f1_macro']:.3f} "
                f"({rows[0]['seconds']:.1f}s)")
        fit_mm_methods(split, train, test, split_seeds, info,
                       [m for m in specs if SPECS[m]["kind"] == "mm"])
        if refs:
            fit_mm_methods(split, train, test, split_seeds, info, refs,
                           reference_confidence(split))
        split_seconds[split] = time.perf_counter() - split_start
        save()
    return save(final=True), records


def write_json(path, meta, records):
    """``{"meta": ..., "records": [...]}`` with one record per line."""
    body = ",\n".join(json.dumps(r, default=float) for r in records)
    path.write_text(f'{{"meta": {json.dumps(meta, indent=1, default=float)},\n'
                    f'"records": [\n{body}\n]}}\n')


def notes(dataset, args, wall, final, splits_run, split_seconds):
    out = [
        "Metrics: `mmdyn_sc._metrics.classification_metrics` for every method (macro and "
        "weighted F1 over the labels present in the test labels or the predictions, "
        "zero_division=0; balanced accuracy = mean recall over the test classes), the "
        "benchmarks' one metric code (`benchmarks/_harness.py`).",
        "mmdyn_sc: `tl.fit` recipe \"default\" (early stopping on its 10 % per-class "
        "validation split of the training cells), plus the ablation switches"
        + (f", max_epochs={args.max_epochs}" if args.max_epochs else "") + ".",
        f"LR C grid logspace({args.lr_c_range[0]:g}, {args.lr_c_range[1]:g}, "
        f"{int(args.lr_c_range[2])}), 3-fold stratified CV on the training cells.",
        f"Wall time of this invocation {wall:.0f} s"
        f"{'' if final else ' (so far; run incomplete)'}; python "
        f"{platform.python_version()}, {os.cpu_count()} CPU(s), {args.threads} thread(s).",
        f"Command: `{command_line()}`",
    ]
    if split_seconds:
        out.append("Wall time per split: " + ", ".join(
            f"{k} {v / 60:.1f} min" for k, v in split_seconds.items()) + ".")
    if dataset == "pbmc10k" and final and 0 < len(splits_run) < args.folds:
        per = (np.mean(list(split_seconds.values())) if split_seconds
               else wall / len(splits_run))
        out.insert(0, f"Only {len(splits_run)} of the {args.folds} folds were run "
                      f"({', '.join(splits_run)}; runtime budget on a shared 2-core "
                      f"machine); at this run's pace all {args.folds} would take about "
                      f"{per * args.folds / 60:.0f} min.")
    if args.quick:
        out.insert(0, "QUICK SMOKE TEST: one seed/fold, 15 epochs; not a result.")
    return out


def command_line():
    return "python benchmarks/ablations.py " + " ".join(sys.argv[1:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("bmmc", "pbmc10k", "both"), default="bmmc")
    add_seeds_argument(parser, 5, what="seeds per BMMC direction")
    parser.add_argument("--folds", type=int, default=5, help="pbmc10k CV folds")
    parser.add_argument("--only-folds", type=int, nargs="+", default=None,
                        help="run only these pbmc10k folds (0-based)")
    parser.add_argument("--max-epochs", type=int, default=None,
                        help="override the recipe's max_epochs (early stopping still on)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 1 seed / fold 0, 15 epochs, written to *_quick.*")
    parser.add_argument("--methods", nargs="+", default=None, choices=list(SPECS),
                        metavar="METHOD", help=f"subset of: {', '.join(SPECS)}")
    parser.add_argument("--out", type=Path, default=None,
                        help="markdown output (default benchmarks/results/ablations_<dataset>"
                             ".md); the JSON of per-run rows goes next to it")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="rebuild the table from saved rows without fitting")
    parser.add_argument("--resume", action="store_true",
                        help="keep the splits already in the JSON and run the others")
    parser.add_argument("--refit", nargs="+", default=None, choices=list(SPECS),
                        metavar="METHOD",
                        help="with --resume: refit these mmdyn_sc methods (MM variants "
                             "and single-modality references) in the splits already saved, "
                             "replacing their rows (and the references if the "
                             "validation-chosen variant's confidence option changes)")
    add_c_range_argument(parser)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS threads (1 on a shared 2-core machine)")
    args = parser.parse_args(argv)
    if args.refit and not args.resume:
        parser.error("--refit needs --resume (it replaces rows of a saved run)")

    datasets = ("bmmc", "pbmc10k") if args.dataset == "both" else (args.dataset,)
    if args.from_json is not None:
        for path in ([args.from_json] if len(datasets) == 1 else
                     [args.from_json.with_name(f"ablations_{d}.json") for d in datasets]):
            data = json.loads(Path(path).read_text())
            text = report(data["meta"]["dataset"], data["records"], data["meta"])
            print(text)
            if args.out is not None:
                args.out.write_text(f"# Ablations: {data['meta']['dataset']}\n\n{text}")
        return

    quiet_process(args.threads)

    specs = list(SPECS) if args.methods is None else [m for m in SPECS if m in args.methods]
    for dataset in datasets:
        suffix = "_quick" if args.quick else ""
        out_md = (args.out if args.out is not None and len(datasets) == 1
                  else RESULTS_DIR / f"ablations_{dataset}{suffix}.md")
        out_json = out_md.with_suffix(".json")
        meta, records = run(dataset, args, specs, out_json)
        text = report(dataset, records, meta)
        print(text)
        out_md.write_text(f"# Ablations: {dataset}\n\n{text}")
        print(f"wrote {out_md} and {out_json}", file=sys.stderr)


if __name__ == "__main__":
    main()
