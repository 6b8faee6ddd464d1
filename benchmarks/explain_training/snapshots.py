"""Screen: does averaging the attribution over snapshots of ONE training run (no extra fit)
make the per-class protein attribution more stable across seeds? Training-donor cells only.

Snapshots: the network's weights after each training epoch (the training plan's
``on_train_epoch_end`` is wrapped); a variant's members are the snapshots ``b`` epochs before
the last (``VARIANTS``), averaged with the final network as ``tl.fit(n_fits=)`` averages extra
fits (``model.attribution_members_``). Rankings, precision and stability are
``benchmarks/explain.py``'s. Run (2 min, one core):
``OMP_NUM_THREADS=1 python benchmarks/explain_training/snapshots.py``.
"""
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("MMDYN_SC_DATA_DIR", "/work/shared/data")

#: Variant -> epochs before the last whose snapshots join the final network.
VARIANTS = {"one": [], "snap10_20": [10, 20], "snap5_20": [5, 10, 15, 20], "snap20": [20],
            "snap20_40": [20, 30, 40]}


def main():
    from _harness import quiet_process

    quiet_process(1)
    import explain as ex
    import numpy as np
    from _members import record, summary

    import mmdyn_sc
    from mmdyn_sc.model import _training_plan as tp
    from mmdyn_sc.model._attribution_members import member_state

    snaps = []
    plain = tp.MMDynamicsTrainingPlan.on_train_epoch_end

    def keep_snapshot(self):
        plain(self)
        snaps.append(member_state(self.module))

    tp.MMDynamicsTrainingPlan.on_train_epoch_end = keep_snapshot
    markers = ex.read_markers("bmmc_protein.csv")
    mdata = ex.load_bmmc()
    out = {}
    for donor in ("s1d1", "s1d2"):
        train = mdata[(mdata.obs["batch"] == donor).to_numpy()].copy()
        for seed in range(5):
            snaps.clear()
            t0 = time.perf_counter()
            model = mmdyn_sc.tl.fit(train.copy(), "cell_type", seed=seed,
                                    enable_progress_bar=False, attribution=False)
            last = len(snaps) - 1
            net = ex.Net(model)
            rows = np.asarray(model.train_indices)
            for name, back in VARIANTS.items():
                model.attribution_members_ = [snaps[last - b] for b in back if last - b >= 0]
                out.setdefault(name, {}).setdefault(donor, []).append(
                    record(ex, net, rows, seed, markers))
            print(donor, seed, "epochs", last + 1, "s", round(time.perf_counter() - t0),
                  {n: round(out[n][donor][-1]["p5"], 3) for n in VARIANTS}, flush=True)
    for name in VARIANTS:
        rho, jac, p5 = summary(ex, out[name])
        print(f"{name:10s} Spearman {rho:.3f}  J@20 {jac:.3f}  "
              f"P@5 s1d1/s1d2 {p5[0]:.3f}/{p5[1]:.3f}")

if __name__ == "__main__":
    main()
