"""Issue 18: what the per-class attribution costs (``attribution=True``, the default).

Two measurements, in one process, one torch thread:

1. **Fit time on BMMC** (target: a default fit takes at most 2x the time of a fit without
   the attribution, 0.2.0's fit): for each training donor (s1d1, s1d2) and seed,
   ``tl.fit(..., attribution=False)``, ``tl.fit(..., n_fits=1)`` (one fit with the
   attribution) and ``tl.fit(..., n_fits=2)`` (the default, ``n_fits="auto"``, for this
   data) one after the other (same seed: the same first fit), after one untimed warm-up
   fit; the ratio of the medians and the median of the paired ratios.
2. **tl.predict on 100,000 cells** (target: the attribution adds at most 2x, i.e. a predict
   with it takes at most 2x one without): a model fitted on pbmc10k (all 4000 genes + 14
   proteins, coarse ``cell_type`` without HSC, seed 0, default recipe), and a query of
   100,000 cells drawn with replacement from pbmc10k's cells; ``tl.predict`` with and
   without attribution, alternating, ``--repeats`` times each; medians.

Both time one fit (``n_fits=1``) and the default's two (``n_fits=2``, the attribution
averaged over two fits): the fit, and ``tl.predict`` with a model fitted each way.

Usage::

    export MMDYN_SC_DATA_DIR=/work/shared/data OMP_NUM_THREADS=1
    python benchmarks/attribution_cost.py            # writes results/attribution_cost.md
    python benchmarks/attribution_cost.py --quick    # 1 seed, 20,000 query cells, no file
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _harness import add_seeds_argument, quiet_process  # noqa: E402
from explain import load_bmmc, load_pbmc10k  # noqa: E402  (the same cells as explain.py)

RESULTS_MD = HERE / "results" / "attribution_cost.md"


def timed_fit(train, seed, attribution, n_fits=1):
    import mmdyn_sc as ms

    data = train.copy()
    t0 = time.perf_counter()
    model = ms.tl.fit(data, "cell_type", seed=seed, enable_progress_bar=False,
                      attribution=attribution, n_fits=n_fits)
    return time.perf_counter() - t0, model


def fit_costs(seeds):
    mdata = load_bmmc()
    # untimed: the process's first fit pays one-off costs (imports inside the package,
    # Lightning's first trainer) that would fall on the first timed fit alone
    import mmdyn_sc as ms

    ms.tl.fit(mdata[mdata.obs["batch"] == "s1d1"].copy(), "cell_type", max_epochs=2,
              enable_progress_bar=False)
    rows = []
    for donor in ("s1d1", "s1d2"):
        train = mdata[mdata.obs["batch"] == donor].copy()
        for seed in seeds:
            off, _ = timed_fit(train, seed, False)
            on, _ = timed_fit(train, seed, True)
            two, _ = timed_fit(train, seed, True, n_fits=2)
            rows.append({"donor": donor, "seed": seed, "off": off, "on": on, "two": two})
            print(f"BMMC {donor} seed {seed}: fit {off:.1f} s without, {on:.1f} s with "
                  f"attribution, {two:.1f} s with n_fits=2", flush=True)
    return rows


def saved_mb(model) -> float:
    """Size of ``model.save(...)``'s folder in MB (10^6 bytes)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        model.save(folder, overwrite=True)
        return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()) / 1e6


def predict_costs(n_query, repeats):
    from mudata import MuData

    import mmdyn_sc as ms

    mdata = load_pbmc10k()
    t0 = time.perf_counter()
    model = ms.tl.fit(mdata, "cell_type", seed=0, enable_progress_bar=False,
                      attribution=False, n_fits=1)
    fit_s = time.perf_counter() - t0
    two_fits = ms.tl.fit(mdata.copy(), "cell_type", seed=0, enable_progress_bar=False,
                         n_fits=2)
    rng = np.random.default_rng(0)
    rows = rng.integers(0, mdata.n_obs, n_query)
    names = [f"q{i}" for i in range(n_query)]
    modalities = {}
    for name, mod in mdata.mod.items():  # per AnnData: MuData is slow on repeated names
        part = mod[mdata.obs_names[rows]].copy()
        part.obs_names = names
        modalities[name] = part
    query = MuData(modalities)
    times = {False: [], True: [], "two": []}
    for _ in range(repeats):
        for attribution in (False, True, "two"):
            data = query.copy()
            t0 = time.perf_counter()
            if attribution == "two":  # the model fitted with n_fits=2 (its own fit: model's)
                ms.tl.predict(data, two_fits)
            else:
                ms.tl.predict(data, model, attribution=attribution)
            times[attribution].append(time.perf_counter() - t0)
            print(f"predict {n_query} cells, attribution={attribution}: "
                  f"{times[attribution][-1]:.1f} s", flush=True)
    n_classes = len(model.classes_)
    return {"n_query": n_query, "fit_seconds": fit_s, "times": times,
            "saved_mb": {"one": saved_mb(model), "two": saved_mb(two_fits)},
            "n_classes": n_classes, "n_features": {m: len(f) for m, f in
                                                   model.features_.items()}}


def markdown(fits, predict, command, wall):
    lines = ["# What the per-class attribution costs (`benchmarks/attribution_cost.py`)", "",
             f"Command: `{command}`; total wall {wall:.0f} s; python "
             f"{platform.python_version()}, {os.cpu_count()} CPUs, 1 torch thread. Shared "
             "machine: timings are indicative.", "",
             "## tl.fit on BMMC (default recipe; training donor, all its cells)", "",
             "| donor | seed | fit s, attribution=False | fit s, n_fits=1 | ratio | "
             "fit s, n_fits=2 (the default) | ratio |",
             "|---|---|---|---|---|---|---|"]
    for r in fits:
        lines.append(f"| {r['donor']} | {r['seed']} | {r['off']:.1f} | {r['on']:.1f} | "
                     f"{r['on'] / r['off']:.2f} | {r['two']:.1f} | {r['two'] / r['off']:.2f} |")
    off = np.median([r["off"] for r in fits])
    on = np.median([r["on"] for r in fits])
    paired = np.median([r["on"] / r["off"] for r in fits])
    two = np.median([r["two"] / r["off"] for r in fits])
    lines += ["", f"The default, `n_fits=2` (two fits, their attributions averaged): median "
              f"{np.median([r['two'] for r in fits]):.1f} s against {off:.1f} s without "
              f"the attribution, median paired ratio {two:.2f} (target <= 2: "
              f"**{'PASS' if two <= 2 else 'FAIL'}**).", "",
              f"One fit with the attribution (`n_fits=1`): median {on:.1f} s, ratio of "
              f"medians {on / off:.2f}, median paired ratio {paired:.2f}.", ""]
    t_off = np.median(predict["times"][False])
    t_on = np.median(predict["times"][True])
    t_two = np.median(predict["times"]["two"])
    lines += [f"## tl.predict on {predict['n_query']:,} cells (pbmc10k resampled)", "",
              f"Model: pbmc10k, {predict['n_classes']} classes, features "
              f"{predict['n_features']}, default recipe, fitted in "
              f"{predict['fit_seconds']:.0f} s. Attribution on at most 200 cells per "
              "predicted class.", "",
              "| attribution | runs (s) | median s |", "|---|---|---|",
              f"| False | {', '.join(f'{t:.1f}' for t in predict['times'][False])} | "
              f"{t_off:.1f} |",
              f"| True, model fitted with n_fits=1 | "
              f"{', '.join(f'{t:.1f}' for t in predict['times'][True])} | {t_on:.1f} |",
              f"| True, model fitted with n_fits=2 (the default) | "
              f"{', '.join(f'{t:.1f}' for t in predict['times']['two'])} | {t_two:.1f} |", "",
              f"Ratio, the default model (n_fits=2) {t_two / t_off:.2f} (target <= 2: "
              f"**{'PASS' if t_two / t_off <= 2 else 'FAIL'}**); a model fitted with "
              f"n_fits=1: {t_on / t_off:.2f}.", "",
              f"Saved model (`model.save`): {predict['saved_mb']['one']:.1f} MB with one fit, "
              f"{predict['saved_mb']['two']:.1f} MB with two (the default; the extra fit's "
              "weights are saved with the model).", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_seeds_argument(parser, 3, what="tl.fit seeds per BMMC donor")
    parser.add_argument("--n-query", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    quiet_process(1)
    t0 = time.perf_counter()
    seeds = [0] if args.quick else args.seeds
    fits = fit_costs(seeds)
    predict = predict_costs(20_000 if args.quick else args.n_query,
                            1 if args.quick else args.repeats)
    command = "python benchmarks/attribution_cost.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    text = markdown(fits, predict, command.strip(), time.perf_counter() - t0)
    print(text)
    if not args.quick:
        RESULTS_MD.write_text(text)
        print(f"wrote {RESULTS_MD}")


if __name__ == "__main__":
    main()
