"""Does the certainty stay calibrated when the query shapes the model? BMMC, both directions.

For each donor direction and seed, the package default (``tl.fit(train)`` then
``tl.predict(test)``) and the transductive option (``tl.fit(train + test,
transductive=True)``, test labels missing; as in ``peers.py``) are scored on the test
donor's cells of the training classes: ``obs["mmdyn_certainty"]`` against whether the call is
right (``mmdyn_sc._calibration.calibration_report``: ECE over 15 equal-mass bins, AUROC of
certainty for correct calls, accuracy at 90 % coverage), plus macro F1. The transductive
fit's certainty is calibrated on reference validation cells only, while the query's
pseudo-labelled half was trained on: the question is whether that makes it overconfident.

Usage::

    MMDYN_SC_DATA_DIR=/work/shared/data python benchmarks/transductive_certainty.py
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
from _data import LABEL, load, splits, stacked
from _harness import add_seeds_argument, quiet_process, score

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("mmdyn_sc", "mmdyn_sc transductive")
MEASURES = ("f1_macro", "ece", "auroc_correct", "accuracy_at_90_coverage", "mean_certainty",
            "accuracy")


def run(job) -> dict:
    quiet_process(1)
    import mmdyn_sc
    from mmdyn_sc._calibration import calibration_report

    name, seed, method = job
    mdata, _ = load("bmmc")
    train, test = next((tr, te) for n, tr, te, _, _ in splits("bmmc", mdata, 5, None, [0])
                       if n == name)
    options = {"seed": seed, "enable_progress_bar": False, "attribution": False}
    if method == "mmdyn_sc":
        model = mmdyn_sc.tl.fit(train, LABEL, **options)
        mmdyn_sc.tl.predict(test, model, attribution=False)
        predicted = test.obs["mmdyn_prediction"].astype(str).to_numpy()
        certainty = test.obs["mmdyn_certainty"].to_numpy()
    else:
        both = stacked(train, test)
        both.obs["reference_label"] = np.concatenate(
            [train.obs[LABEL].astype(str).to_numpy(), np.full(test.n_obs, None, dtype=object)])
        model = mmdyn_sc.tl.fit(both, "reference_label", transductive=True, **options)
        rows = (both.obs["part"] == "test").to_numpy()
        predicted = both.obs["mmdyn_prediction"].astype(str).to_numpy()[rows]
        certainty = both.obs["mmdyn_certainty"].to_numpy()[rows]
    truth = test.obs[LABEL].astype(str).to_numpy()
    known = np.isin(truth, model.classes_)  # a class absent from training cannot be right
    report = calibration_report(certainty[known], predicted[known] == truth[known])
    return {"split": name, "seed": seed, "method": method, **score(truth, predicted),
            **{k: v for k, v in report.items() if k != "accuracy"},
            "accuracy": float((predicted[known] == truth[known]).mean())}


def report(records, wall) -> str:
    lines = ["# Certainty of the transductive option (BMMC cross-donor)", "",
             "Written by `python benchmarks/transductive_certainty.py` (see its docstring). "
             "Mean ± sd over seeds, test cells of the training classes.", ""]
    for name in sorted({r["split"] for r in records}):
        lines += [f"## {name}", "", "| method | " + " | ".join(MEASURES) + " |",
                  "|---" * (len(MEASURES) + 1) + "|"]
        for method in METHODS:
            mine = [r for r in records if r["split"] == name and r["method"] == method]
            cells = []
            for m in MEASURES:
                v = np.array([r[m] for r in mine], dtype=float)
                cells.append(f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(f"Wall time {wall / 60:.1f} min on {os.cpu_count()} CPUs, two jobs at a time, "
                 "1 thread each.")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_seeds_argument(parser, 3, what="seeds per direction")
    args = parser.parse_args(argv)
    os.environ.setdefault("MMDYN_SC_DATA_DIR", "/work/shared/data")
    jobs = [(n, s, m) for n in ("s1d1→s1d2", "s1d2→s1d1") for s in args.seeds for m in METHODS]
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(2, maxtasksperchild=1) as pool:
        records = pool.map(run, jobs)
    text = report(records, time.perf_counter() - start)
    (RESULTS / "transductive_certainty.json").write_text(json.dumps(records, indent=1))
    (RESULTS / "transductive_certainty.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
