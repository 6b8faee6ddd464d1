"""Low-rank feature gate vs the full d x d gate on real data (``tl.fit(gate_rank=r)``).

Does ``gate_rank=r`` (gate ``sigmoid(B (A x) + b)``, ``A`` d -> r, ``B`` r -> d) lose macro F1
against the full gate (``gate_rank=None``, tl.fit's default until this comparison made it
``"auto"``: rank 64 from 2000 features)? Per run (split x seed), every gate is
fitted with ``mmdyn_sc.tl.fit``'s recipe "default" (early stopping on its 10 % per-class
validation split of the training cells) on the same training cells, with the same seed and
genes, and scored on the same test cells by the same code (``_harness.score``, i.e.
``mmdyn_sc._metrics.classification_metrics``). ``gate_rank`` is passed as one int, as a
default would be: it applies to every modality with more features than r (the others keep
the full gate).

Datasets (loading, splits, gene selection and fitting are ``benchmarks/ablations.py``'s, from
the shared ``_data`` and ``_mmfit``):

- ``bmmc``: ``_data.load_bmmc()`` (456 cells, 13 classes), all of its genes and 134
  proteins; train on one donor, test on the other, both ways, ``--seeds`` each.
- ``pbmc10k``: ``cell_type_fine`` (6,807 cells, 13 classes), ``--folds``-fold stratified CV
  (``random_state=0``), fold k fitted with seed k; per fold the ``--n-hvg`` most variable
  genes of the training cells (``_data.select_hvg``), all 14 proteins.

The table: macro F1, balanced accuracy, weighted F1 (mean ± sd over runs), fit seconds
(median; the machine may be shared), epochs (median), RNA features, and the paired
difference rank − full in macro-F1 points with the number of runs where rank >= full − 0.01.
Rows go to ``benchmarks/results/gate_rank.json`` (one per run; a run of one dataset
replaces that dataset's rows and keeps the others), the table to ``gate_rank.md``.

Usage::

    MMDYN_SC_DATA_DIR=/work/shared/data python benchmarks/gate_rank.py 2> /tmp/gate_rank.log
    python benchmarks/gate_rank.py --dataset pbmc10k --only-folds 0 1 2 --ranks 64 16
    python benchmarks/gate_rank.py --from-json              # rebuild the table, no fitting
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
from _data import MODS, load, splits
from _harness import add_seeds_argument, fmt, quiet_process
from _mmfit import fit_mm

OUT_MD = Path(__file__).resolve().parent / "results" / "gate_rank.md"
METRICS = (("f1_macro", "macro F1"), ("balanced_accuracy", "balanced acc"),
           ("f1_weighted", "weighted F1"))
TOLERANCE = 0.01


def gate_name(rank):
    return "full" if rank is None else f"rank {rank}"


def run(dataset, args, records, log):
    mdata, classes = load(dataset)
    only = args.only_folds
    n_rna = mdata.mod["rna"].n_vars
    log(f"{dataset}: {mdata.n_obs} cells, {len(classes)} classes, {n_rna} genes, "
        f"{mdata.mod['prot'].n_vars} proteins")
    for split, train, test, split_seeds, info in splits(
            dataset, mdata, args.folds, only, args.seeds, n_hvg=args.n_hvg):
        n_genes = info.get("n_hvg", n_rna)
        n_prot = train.mod["prot"].n_vars
        log(f"{dataset} {split}: {train.n_obs} training / {test.n_obs} test cells, "
            f"{n_genes} genes")
        for seed in split_seeds:
            for rank in [None, *args.ranks]:
                rows = fit_mm(train, test, seed, {"gate_rank": rank}, MODS, args.max_epochs)
                full = rows[0]
                records.append({
                    "dataset": dataset, "split": split, "seed": seed, "gate": gate_name(rank),
                    "gate_rank": rank, "n_rna": n_genes, "n_prot": n_prot,
                    **{k: full[k] for k in ("f1_macro", "balanced_accuracy", "f1_weighted",
                                            "accuracy", "seconds", "epochs", "val_f1_macro")},
                    "f1_macro_without": {r["condition"][1:]: r.get("f1_macro")
                                         for r in rows[1:]},
                })
                log(f"{dataset} {split} seed {seed} {gate_name(rank)}: macro F1 "
                    f"{full['f1_macro']:.3f} | val {full['val_f1_macro']:.3f} | "
                    f"{full['epochs']} epochs {full['seconds']:.1f}s")
                yield


def gate_params(d, rank):
    """Parameters of one modality's gate: full d x d + d, or A (d x r) + r + B (r x d) + d."""
    if rank is None or rank >= d:
        return d * d + d
    return 2 * d * rank + rank + d


def report(records, meta):
    lines = ["# Low-rank feature gate vs full gate", "", COMMON, ""]
    for dataset in sorted({r["dataset"] for r in records}):
        rows = [r for r in records if r["dataset"] == dataset]
        gates = list(dict.fromkeys(r["gate"] for r in rows))
        full = {(r["split"], r["seed"]): r for r in rows if r["gate"] == "full"}
        splits_ = list(dict.fromkeys(r["split"] for r in rows))
        n_rna = sorted({r["n_rna"] for r in rows})
        n_prot = sorted({r["n_prot"] for r in rows})
        lines += [f"## {dataset}", "", meta[dataset]["protocol"], "",
                  f"Splits: {', '.join(splits_)}; seeds per split: "
                  f"{sorted({r['seed'] for r in rows})}; {n_rna} genes, {n_prot} proteins.",
                  "", "| gate | runs | RNA features | gate params (rna + prot) | "
                  + " | ".join(h for _, h in METRICS)
                  + " | fit s (median) | epochs (median) | rank − full macro F1 (points) "
                  f"| runs rank ≥ full − {TOLERANCE} |",
                  "|" + "---|" * 11]
        for gate in gates:
            rs = [r for r in rows if r["gate"] == gate]
            rank = rs[0]["gate_rank"]
            params = " + ".join(f"{gate_params(d, rank):,}" for d in (n_rna[0], n_prot[0]))
            cells = [fmt([r[k] for r in rs]) for k, _ in METRICS]
            if gate == "full":
                diff = close = "—"
            else:
                pairs = [(r, full[(r["split"], r["seed"])]) for r in rs
                         if (r["split"], r["seed"]) in full]
                d = np.asarray([a["f1_macro"] - b["f1_macro"] for a, b in pairs])
                sd = 100 * d.std(ddof=1) if len(d) > 1 else 0.0
                diff = f"{100 * d.mean():+.1f} ± {sd:.1f} (n={len(d)})"
                close = f"{int(np.sum(d >= -TOLERANCE))}/{len(d)}"
            lines.append(
                f"| {gate} | {len(rs)} | {', '.join(map(str, sorted({r['n_rna'] for r in rs})))}"
                f" | {params} | " + " | ".join(cells)
                + f" | {np.median([r['seconds'] for r in rs]):.1f}"
                f" | {np.median([r['epochs'] for r in rs]):.0f} | {diff} | {close} |")
        lines += ["", "Macro F1 per split (mean ± sd over seeds):", "",
                  "| gate | " + " | ".join(splits_) + " |", "|---|" + "---|" * len(splits_)]
        for gate in gates:
            lines.append(f"| {gate} | " + " | ".join(fmt(
                [r["f1_macro"] for r in rows if r["gate"] == gate and r["split"] == s])
                for s in splits_) + " |")
        slow = max((r for r in rows if r["gate"] == "full"), key=lambda r: r["seconds"])
        lines += ["", f"- Slowest full-gate fit: {slow['seconds']:.0f} s ({slow['split']}, seed "
                  f"{slow['seed']}, {slow['epochs']} epochs)."]
        lines += [f"- {note}" for note in meta[dataset]["notes"]] + [""]
    return "\n".join(lines) + "\n"


COMMON = ("`mmdyn_sc.tl.fit` recipe \"default\" (early stopping on the 10 % per-class "
          "validation split of the training cells) with `gate_rank=None` (full d x d gate) "
          "vs one int `gate_rank` r (applied to every modality with more than r features). "
          "Same training/test cells, seeds and genes for every gate; metrics "
          "`mmdyn_sc._metrics.classification_metrics` (macro/weighted F1 over the labels in the "
          "test labels or predictions, balanced accuracy over the test classes); mean ± sd over "
          "runs (run = split x seed); paired difference per run: rank − full.")


def protocol(dataset, args):
    if dataset == "bmmc":
        return ("BMMC CITE-seq: train on one donor, test on the other, both ways, seeds "
                f"{args.seeds}; all genes of `_data.load_bmmc()` and all 134 "
                "proteins (rank r < 134 applies to the proteins too).")
    folds = args.only_folds if args.only_folds is not None else list(range(args.folds))
    return (f"PBMC 10k CITE-seq, `cell_type_fine`: {args.folds}-fold stratified CV "
            f"(random_state 0), folds run {folds}, fold k with seed k; {args.n_hvg} highly "
            "variable genes of each fold's training cells; 14 proteins (full gate).")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=("bmmc", "pbmc10k", "both"), default="both")
    parser.add_argument("--ranks", type=int, nargs="+", default=[64])
    add_seeds_argument(parser, 3, what="seeds per BMMC direction")
    parser.add_argument("--folds", type=int, default=5, help="pbmc10k CV folds")
    parser.add_argument("--only-folds", type=int, nargs="+", default=None,
                        help="run only these pbmc10k folds (0-based)")
    parser.add_argument("--n-hvg", type=int, default=2000, help="pbmc10k genes per fold")
    parser.add_argument("--max-epochs", type=int, default=None,
                        help="override the recipe's max_epochs (early stopping still on)")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    parser.add_argument("--from-json", action="store_true",
                        help="rebuild the markdown from the JSON without fitting")
    parser.add_argument("--out", type=Path, default=OUT_MD,
                        help="markdown output; the JSON of per-run rows is next to it "
                             "(default benchmarks/results/gate_rank.md)")
    args = parser.parse_args(argv)
    out_md, out_json = args.out, args.out.with_suffix(".json")

    if args.from_json:
        saved = json.loads(out_json.read_text())
        text = report(saved["records"], saved["meta"])
        out_md.write_text(text)
        print(text)
        return

    os.environ.setdefault("MMDYN_SC_DATA_DIR", "/work/shared/data")
    quiet_process(args.threads)

    datasets = ("bmmc", "pbmc10k") if args.dataset == "both" else (args.dataset,)
    old = json.loads(out_json.read_text()) if out_json.exists() else {"meta": {}, "records": []}
    records = [r for r in old["records"] if r["dataset"] not in datasets]
    t0 = time.perf_counter()
    command = "python benchmarks/gate_rank.py " + " ".join(sys.argv[1:] if argv is None
                                                            else argv)

    def log(msg):
        print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", file=sys.stderr, flush=True)

    def save(final):
        wall = time.perf_counter() - t0
        notes = [f"Wall time {wall / 60:.1f} min ({', '.join(datasets)})"
                 + ("" if final else ", so far: run incomplete") + f"; python "
                 f"{platform.python_version()}, {os.cpu_count()} CPU(s), {args.threads} torch "
                 "thread(s); fit seconds depend on what else ran on the machine.",
                 f"Command: `MMDYN_SC_DATA_DIR=/work/shared/data {command}`"]
        meta = {**{k: v for k, v in old["meta"].items() if k not in datasets},
                **{d: {"protocol": protocol(d, args), "notes": notes, "command": command,
                       "wall_seconds": wall} for d in datasets}}
        out_json.parent.mkdir(parents=True, exist_ok=True)
        body = ",\n".join(json.dumps(r, default=float) for r in records)
        out_json.write_text(f'{{"meta": {json.dumps(meta, indent=1)},\n'
                            f'"records": [\n{body}\n]}}\n')
        text = report(records, meta)
        out_md.write_text(text)
        return text

    for dataset in datasets:
        for _ in run(dataset, args, records, log):
            save(final=False)  # paired rows so far survive an interrupted run
    print(save(final=True))
    log(f"wrote {out_md} and {out_json}")


if __name__ == "__main__":
    main()
