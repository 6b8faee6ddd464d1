"""Command line: ``mmdyn-sc demo`` (also ``python -m mmdyn_sc demo``)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _demo_data(name: str, seed: int):
    """(training MuData, query MuData, labels key) for the demo."""
    from . import datasets, pp
    from ._utils import copy_mudata

    if name == "bmmc":
        mdata = datasets.bmmc_cite()
        pp.prepare(mdata)
        counts = mdata.obs["cell_type"].value_counts()
        keep = mdata.obs["cell_type"].isin(counts.index[counts >= 10])
        mdata = copy_mudata(mdata[keep])
        train = copy_mudata(mdata[mdata.obs["batch"] == "s1d1"])
        query = copy_mudata(mdata[mdata.obs["batch"] == "s1d2"])
        return train, query, "cell_type"
    mdata, _ = datasets.synthetic(seed=seed)
    pp.prepare(mdata, kinds={"noise": "none"})
    is_query = mdata.obs_names.isin(mdata.obs_names[::4])
    return copy_mudata(mdata[~is_query]), copy_mudata(mdata[is_query]), "cell_type"


def demo(dataset: str, out: Path, max_epochs: int, seed: int) -> int:
    """Fit on one part of the example data, label the other, write an .h5mu and plots."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np

    from . import pl, tl

    out.mkdir(parents=True, exist_ok=True)
    train, query, labels_key = _demo_data(dataset, seed)
    print(f"[mmdyn-sc] fitting on {train.n_obs} cells ({dataset})", file=sys.stderr)
    model = tl.fit(train, labels_key, max_epochs=max_epochs, seed=seed)
    tl.predict(query, model)
    accuracy = float(np.mean(query.obs["mmdyn_prediction"].astype(str)
                             == query.obs[labels_key].astype(str)))
    query.write_h5mu(out / "query_annotated.h5mu")
    train.write_h5mu(out / "train_annotated.h5mu")
    first = model.modalities_[0]
    fig = pl.feature_weights(query, first, return_fig=True)
    fig.savefig(out / f"feature_weights_{first}.png", dpi=120, bbox_inches="tight")
    fig = pl.training_history(train, return_fig=True)
    fig.savefig(out / "training_history.png", dpi=120, bbox_inches="tight")
    print(f"query accuracy {accuracy:.3f} on {query.n_obs} cells", file=sys.stderr)
    print(f"wrote {out}/query_annotated.h5mu, train_annotated.h5mu, "
          f"feature_weights_{first}.png, training_history.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mmdyn-sc`` command."""
    parser = argparse.ArgumentParser(
        prog="mmdyn-sc", description="MM dynamics cell classification on MuData."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser(
        "demo",
        help="fit on example data, label held-out cells, write .h5mu files and plots",
        description="Fit on the example data (BMMC CITE-seq: train on donor s1d1, label donor "
        "s1d2; or a synthetic dataset that needs no download), write annotated .h5mu files "
        "and plots into --out.",
    )
    p_demo.add_argument("--dataset", choices=["bmmc", "synthetic"], default="bmmc",
                        help="bmmc reads MMDYN_SC_DATA_DIR or downloads; synthetic needs nothing")
    p_demo.add_argument("--out", type=Path, default=Path("mmdyn_demo"), help="output folder")
    p_demo.add_argument("--max-epochs", type=int, default=200, help="training epochs (cap)")
    p_demo.add_argument("--seed", type=int, default=0, help="random seed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        return demo(args.dataset, args.out, args.max_epochs, args.seed)
    except (KeyError, ValueError, TypeError, FileNotFoundError) as err:
        print(f"mmdyn-sc: error: {err}", file=sys.stderr)
        return 2
