"""Save the small model of this release under tests/data/models/<version>/ (once per release).

The model is trained on BMMC CITE-seq donor s1d1 (prepared with ``mmdyn_sc.pp.prepare``;
the 50 RNA features of highest variance on that donor and every protein), at most 150
epochs (early stopping), seed 0.
Next to ``model.pt`` it writes the class probabilities it gives donor s1d2
(``expected_proba.csv``) and, from 0.2.0 on, the certainty ``tl.predict`` gives each of those
cells (``expected_certainty.csv``: the calibration saved with the model).
``tests/test_release_models.py`` loads every saved release onto today's data and checks
those values, so a version that cannot load an earlier model, or predicts differently with
it, fails CI.

Usage: ``MMDYN_SC_DATA_DIR=../shared/data python tests/data/models/save_release_model.py``
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
N_RNA_FEATURES = 50


def release_data():
    """(donor s1d1, donor s1d2) of prepared BMMC, with the release model's features."""
    from mmdyn_sc import datasets, pp

    mdata = datasets.bmmc_cite()
    pp.prepare(mdata)
    counts = mdata.obs["cell_type"].value_counts()
    mdata = mdata[mdata.obs["cell_type"].isin(counts.index[counts >= 10])].copy()
    return mdata[mdata.obs["batch"] == "s1d1"].copy(), mdata[mdata.obs["batch"] == "s1d2"].copy()


def main() -> int:
    import mudata as md
    import torch

    import mmdyn_sc as ms
    from mmdyn_sc._utils import mudata_options

    torch.set_num_threads(1)
    train, query = release_data()
    layer = train["rna"].layers["mmdyn_prepared"]
    variance = np.asarray(layer.power(2).mean(0) if hasattr(layer, "power") else
                          (layer ** 2).mean(0)).ravel() - np.asarray(layer.mean(0)).ravel() ** 2
    keep = np.sort(np.argsort(-variance, kind="stable")[:N_RNA_FEATURES])
    with mudata_options():
        train = md.MuData({"rna": train["rna"][:, keep].copy(), "prot": train["prot"].copy()})
        train.obs["cell_type"] = train["rna"].obs["cell_type"]
    model = ms.tl.fit(train, "cell_type", n_hidden=32, max_epochs=150, seed=0,
                      enable_progress_bar=False)
    folder = HERE / ms.__version__
    if folder.exists() and "--overwrite" not in sys.argv:
        print(f"{folder} exists; pass --overwrite to replace it", file=sys.stderr)
        return 1
    model.save(str(folder), overwrite=True)
    model.predict(query, soft=True).to_csv(folder / "expected_proba.csv", float_format="%.7g")
    ms.tl.predict(query, model, attribution=False)
    query.obs[["mmdyn_certainty"]].to_csv(folder / "expected_certainty.csv",
                                          float_format="%.7g")
    print(f"saved {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
