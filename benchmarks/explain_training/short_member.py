"""Screen: can the extra fit of ``tl.fit(n_fits=2)`` train for fewer epochs and still make the
per-class protein attribution as stable across seeds? Training-donor cells only.

Per training donor and seed 0-4: the default fit (``E`` epochs, early stopping), then one
extra fit with seed + 100 (as ``tl.fit(n_fits=2)``) per variant, its weights averaged into the
attribution as ``model.attribution_members_``. Rankings, P@5 and stability are
``benchmarks/explain.py``'s; the extra fit's seconds are reported against the first fit's.
Run (about 7 min, one core):
``OMP_NUM_THREADS=1 python benchmarks/explain_training/short_member.py``.
"""
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MMDYN_SC_DATA_DIR", "/work/shared/data")


def variants(epochs: int) -> dict:
    """Variant -> the extra fit's options (``None``: no extra fit)."""
    return {"one fit": None,
            "extra fit as n_fits=2": {},
            "extra fit, E - 20 epochs, no early stopping": {
                "max_epochs": max(1, epochs - 20), "early_stopping": False},
            "extra fit, E / 2 epochs, no early stopping": {
                "max_epochs": max(1, round(epochs / 2)), "early_stopping": False},
            "extra fit, 30 epochs, no early stopping": {
                "max_epochs": 30, "early_stopping": False}}


def main():
    from _harness import quiet_process

    quiet_process(1)
    import explain as ex
    import numpy as np
    from _members import record, summary

    import mmdyn_sc
    from mmdyn_sc.model._attribution_members import member_state

    markers = ex.read_markers("bmmc_protein.csv")
    mdata = ex.load_bmmc()
    out, seconds = {}, {}
    for donor in ("s1d1", "s1d2"):
        train = mdata[(mdata.obs["batch"] == donor).to_numpy()].copy()
        for seed in range(5):
            t0 = time.perf_counter()
            model = mmdyn_sc.tl.fit(train.copy(), "cell_type", seed=seed,
                                    enable_progress_bar=False, attribution=False)
            first = time.perf_counter() - t0
            epochs = len(model.history["train_loss"])
            net = ex.Net(model)
            rows = np.asarray(model.train_indices)
            for name, options in variants(epochs).items():
                model.attribution_members_ = []
                if options is not None:
                    t0 = time.perf_counter()
                    extra = mmdyn_sc.tl.fit(train.copy(), "cell_type", seed=seed + 100,
                                            enable_progress_bar=False, attribution=False,
                                            **options)
                    seconds.setdefault(name, []).append((time.perf_counter() - t0) / first)
                    model.attribution_members_ = [member_state(extra.module)]
                out.setdefault(name, {}).setdefault(donor, []).append(
                    record(ex, net, rows, seed, markers))
            print(donor, seed, "epochs", epochs, {n: round(out[n][donor][-1]["p5"], 3)
                                                  for n in out}, flush=True)
    for name in out:
        rho, jac, p5 = summary(ex, out[name])
        ratio = np.median(seconds[name]) if name in seconds else 0.0
        print(f"| {name} | {rho:.3f} | {jac:.3f} | {p5[0]:.3f} / {p5[1]:.3f} | {ratio:.2f} |")

if __name__ == "__main__":
    main()
