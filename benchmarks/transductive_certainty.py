"""Does the certainty stay calibrated when the query shapes the model? BMMC, both directions.

For each donor direction and seed, the package default (``tl.fit(train)`` then
``tl.predict(test)``) and the transductive option (``tl.fit(train + test,
transductive=True)``, test labels missing; as in ``peers.py``) are scored on the test
donor's cells of the training classes: ``obs["mmdyn_certainty"]`` against whether the call is
right (``mmdyn_sc._calibration.calibration_report``: ECE over 15 equal-mass bins, AUROC of
certainty for correct calls, accuracy at 90 % coverage), plus macro F1. The transductive
fit's certainty is calibrated on reference validation cells only, while the query's
pseudo-labelled half was trained on: the question is whether that makes it overconfident.
The row ``mmdyn_sc transductive, own`` scores the second fit's own certainty recomputed
from the model (the same as the written one unless the package writes another: at commit
7277c36 it wrote the first fit's certainty of the second fit's call for the unlabelled
cells, a candidate that the validation run below rejected,
``results/transductive_certainty_notes.md``).

``--within-donor`` (validation only: the test donor is never read) asks the same question
inside each training donor: its cells (of the 13 classes) are split in two halves per class
(seeded; a class's odd cell goes to the reference), the reference half labelled and the
other hidden; the transductive fit learns from both and its certainties are scored on the
hidden half. This is the run that decides such a change (rule in
``results/transductive_certainty_notes.md``); results go to
``transductive_certainty_within.*``.

Usage::

    MMDYN_SC_DATA_DIR=/work/shared/data python benchmarks/transductive_certainty.py
    python benchmarks/transductive_certainty.py --within-donor --seeds 5
    python benchmarks/transductive_certainty.py --within-donor --seeds 5 --first-seed 5
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
METHODS = ("mmdyn_sc", "mmdyn_sc transductive", "mmdyn_sc transductive, own")
MEASURES = ("f1_macro", "ece", "auroc_correct", "accuracy_at_90_coverage", "mean_certainty",
            "accuracy")


def halves(labels: np.ndarray, seed: int) -> np.ndarray:
    """Per class, a seeded shuffle of its cells alternating reference / hidden (True)."""
    rng = np.random.default_rng(seed)
    hidden = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        cells = rng.permutation(np.flatnonzero(labels == label))
        hidden[cells[1::2]] = True  # an odd cell out stays in the reference
    return hidden


def record(name, seed, method, truth, predicted, certainty, classes) -> dict:
    """Macro F1 and the certainty's calibration report on the cells of known classes."""
    from mmdyn_sc._calibration import calibration_report

    known = np.isin(truth, classes)  # a class absent from training cannot be right
    report = calibration_report(certainty[known], predicted[known] == truth[known])
    return {"split": name, "seed": seed, "method": method, **score(truth, predicted),
            **{k: v for k, v in report.items() if k != "accuracy"},
            "accuracy": float((predicted[known] == truth[known]).mean())}


def run(job) -> list[dict]:
    quiet_process(1)
    import mmdyn_sc
    from mmdyn_sc.model import _certainty

    name, seed, method, within = job
    mdata, _ = load("bmmc")
    train, test = next((tr, te) for n, tr, te, _, _ in splits("bmmc", mdata, 5, None, [0])
                       if n == name)
    if within:  # the training donor only: a labelled half and a hidden half
        hidden = halves(train.obs[LABEL].astype(str).to_numpy(), seed)
        train, test = train[~hidden].copy(), train[hidden].copy()
        name = f"within {name.split('→')[0]}"
    options = {"seed": seed, "enable_progress_bar": False, "attribution": False}
    truth = test.obs[LABEL].astype(str).to_numpy()
    if method == "mmdyn_sc":
        model = mmdyn_sc.tl.fit(train, LABEL, **options)
        mmdyn_sc.tl.predict(test, model, attribution=False)
        predicted = test.obs["mmdyn_prediction"].astype(str).to_numpy()
        return [record(name, seed, method, truth, predicted,
                       test.obs["mmdyn_certainty"].to_numpy(), model.classes_)]
    both = stacked(train, test)
    both.obs["reference_label"] = np.concatenate(
        [train.obs[LABEL].astype(str).to_numpy(), np.full(test.n_obs, None, dtype=object)])
    model = mmdyn_sc.tl.fit(both, "reference_label", transductive=True, **options)
    rows = (both.obs["part"] == "test").to_numpy()
    predicted = both.obs["mmdyn_prediction"].astype(str).to_numpy()[rows]
    own = _certainty.certainty(_certainty.model_state(model), model.infer())[rows]
    return [record(name, seed, "mmdyn_sc transductive", truth, predicted,
                   both.obs["mmdyn_certainty"].to_numpy()[rows], model.classes_),
            record(name, seed, "mmdyn_sc transductive, own", truth, predicted, own,
                   model.classes_)]


def report(records, wall, within: bool = False) -> str:
    where = ("within each training donor: hidden half of its cells" if within else
             "BMMC cross-donor: test cells of the training classes")
    lines = [f"# Certainty of the transductive option ({where.split(':')[0]})", "",
             "Written by `python benchmarks/transductive_certainty.py"
             + (" --within-donor" if within else "") + "` (see its docstring). "
             f"Mean ± sd over seeds; {where.split(': ')[1]}.", ""]
    for name in sorted({r["split"] for r in records}):
        lines += [f"## {name}", "", "| method | " + " | ".join(MEASURES) + " |",
                  "|---" * (len(MEASURES) + 1) + "|"]
        for method in METHODS:
            mine = [r for r in records if r["split"] == name and r["method"] == method]
            if not mine:
                continue
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
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds K..K+N-1 instead of 0..N-1")
    parser.add_argument("--within-donor", action="store_true",
                        help="validation only: hidden halves of the training donors")
    args = parser.parse_args(argv)
    args.seeds = [args.first_seed + s for s in args.seeds]
    os.environ.setdefault("MMDYN_SC_DATA_DIR", "/work/shared/data")
    methods = ("mmdyn_sc transductive",) if args.within_donor else METHODS[:2]
    jobs = [(n, s, m, args.within_donor) for n in ("s1d1→s1d2", "s1d2→s1d1")
            for s in args.seeds for m in methods]
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(2, maxtasksperchild=1) as pool:
        records = [r for rs in pool.map(run, jobs) for r in rs]
    text = report(records, time.perf_counter() - start, args.within_donor)
    stem = "transductive_certainty_within" if args.within_donor else "transductive_certainty"
    if args.first_seed:
        stem += f"_seeds{args.seeds[0]}-{args.seeds[-1]}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(records, indent=1))
    (RESULTS / f"{stem}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
