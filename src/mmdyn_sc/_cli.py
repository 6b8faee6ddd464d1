"""Command line: ``mmdyn-sc demo | fit | predict`` (also ``python -m mmdyn_sc ...``).

``fit`` and ``predict`` read and write ``.h5mu`` files, for pipelines::

    mmdyn-sc fit train.h5mu --labels cell_type --model-dir model/ --out train_annotated.h5mu
    mmdyn-sc predict query.h5mu --model-dir model/ --out query_annotated.h5mu

Everything the command prints (progress, the layer each modality uses, summaries, errors)
goes to stderr; stdout stays empty, so nothing has to be filtered out of a pipe (only
``--help`` writes to stdout, as argparse does). The results are the files written. Bad input
exits with status 2 and ``mmdyn-sc: error: <message>`` on stderr.

Input: an ``.h5mu``, or an ``.h5ad`` (read as a MuData with one modality, ``rna`` unless
``--h5ad-modality`` names it). Raw counts are not normalised behind the user's back: like
scanpy, ``fit`` stops when an RNA or protein modality would be trained on counts and names the
fix (``--prepare``, which runs :func:`mmdyn_sc.pp.prepare`, or ``--layers MOD=X``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ._cli_input import (
    H5AD_MODALITY,
    MODEL_FILE,
    CLIError,
    _check_counts,
    _check_model_dir,
    _check_paths,
    _error_message,
    _info,
    _layer_spec,
    _layer_text,
    _read,
    _write,
)
from ._settings import DATA_DIR_ENV


def _demo_data(name: str, seed: int):
    """(training MuData, query MuData, labels key) for the demo."""
    from . import datasets, pp
    from ._utils import copy_mudata

    if name == "bmmc":
        try:
            mdata = datasets.bmmc_cite()
        except datasets.DownloadError as err:
            raise CLIError(
                f"cannot get the BMMC demo data. {err} Ways out: set {DATA_DIR_ENV} to a "
                "folder holding bmmc_cite_neurips2021/ (a local copy), or run `mmdyn-sc demo "
                "--dataset synthetic`, which needs no data."
            ) from err
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


def demo(dataset: str, out: Path, max_epochs: int, seed: int, progress: bool = False) -> int:
    """Fit on one part of the example data, label the other, write an .h5mu and plots.

    ``out`` is created only once there is something to write into it.
    """
    import matplotlib

    matplotlib.use("Agg")

    from . import pl, tl
    from ._keys import Key

    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} exists and is not a folder")
    train, query, labels_key = _demo_data(dataset, seed)
    _info(f"fitting on {train.n_obs} cells ({dataset})")
    model = tl.fit(train, labels_key, max_epochs=max_epochs, seed=seed,
                   enable_progress_bar=progress)
    tl.predict(query, model)
    accuracy = query.uns[Key.uns.params()]["metrics"]["query"]["accuracy"]
    out.mkdir(parents=True, exist_ok=True)
    _write(query, out / "query_annotated.h5mu")
    _write(train, out / "train_annotated.h5mu")
    # Each class's top features by the attribution, for the protein panel where there is one.
    shown = "prot" if "prot" in model.modalities_ else model.modalities_[0]
    fig = pl.attribution(query, shown, return_fig=True)
    fig.savefig(out / f"attribution_{shown}.png", dpi=120, bbox_inches="tight")
    fig = pl.training_history(train, return_fig=True)
    fig.savefig(out / "training_history.png", dpi=120, bbox_inches="tight")
    _info(f"query accuracy {accuracy:.3f} on {query.n_obs} cells")
    _info(f"wrote {out}/attribution_{shown}.png, training_history.png")  # the .h5mu: above
    return 0


# ---------------------------------------------------------------------------- fit / predict
def _accuracy_text(metrics: dict, role: str) -> str:
    accuracy = (metrics or {}).get(role, {}).get("accuracy")
    return "" if accuracy is None else f", {role} accuracy {float(accuracy):.3f}"


def fit_command(args: argparse.Namespace) -> int:
    """``mmdyn-sc fit``: train on an .h5mu, save the model, write the annotated data."""
    _check_paths(args.input, args.out, args.force)
    if args.model_dir.exists() and not args.model_dir.is_dir():
        raise CLIError(f"--model-dir {args.model_dir} exists and is not a folder")
    if args.max_epochs is not None and args.max_epochs < 1:
        raise CLIError(f"--max-epochs must be a positive integer, got {args.max_epochs}")
    if args.checkpoint_every is not None and args.checkpoint_dir is None:
        raise CLIError("--checkpoint-every needs --checkpoint-dir")
    if args.resume and args.checkpoint_dir is None:
        raise CLIError("--resume needs --checkpoint-dir")
    layers = dict(args.layers) if args.layers else None
    mdata = _read(args.input, args.h5ad_modality)
    modalities = args.modalities or list(mdata.mod)
    used = _check_counts(mdata, modalities, layers or {}, args.image_key, args.prepare)
    _info(f"layers used: {_layer_text(used)}")

    from . import tl
    from ._keys import Key

    options = {"max_epochs": args.max_epochs} if args.max_epochs is not None else {}
    if args.confidence is not None:
        options["confidence"] = args.confidence
    if args.modality_dropout is not None:
        options["modality_dropout"] = args.modality_dropout
    if args.gate_rank is not None:
        options["gate_rank"] = args.gate_rank
    if args.patch_size is not None:
        options["image_options"] = {"patch_size": args.patch_size}
    if args.transductive:
        options["transductive"] = True
    if args.n_fits is not None:
        options["n_fits"] = args.n_fits
    if args.checkpoint_dir is not None:
        options.update(checkpoint_dir=str(args.checkpoint_dir), resume=args.resume,
                       checkpoint_every_n_epochs=args.checkpoint_every or 10)
    _info(f"fitting on {mdata.n_obs} cells (labels {args.labels!r}, recipe {args.recipe})")
    model = tl.fit(mdata, args.labels, modalities=args.modalities, layers=layers,
                   key_added=args.key_added, recipe=args.recipe, seed=args.seed,
                   image_key=args.image_key, enable_progress_bar=args.progress,
                   attribution=not args.no_attribution, **options)
    model.save(str(args.model_dir), overwrite=True)
    _info(f"saved model to {args.model_dir}")
    _write(mdata, args.out)
    split = mdata.obs[Key.obs.split(args.key_added)].value_counts()
    sizes = ", ".join(f"{name} {int(split.get(name, 0))}"
                      for name in split.index if split.get(name, 0))
    summary = mdata.uns[Key.uns.params(args.key_added)]
    _info(f"fit: {mdata.n_obs} cells, {len(model.classes_)} classes, modalities "
          f"{', '.join(model.modalities_)}; split {sizes}"
          f"{_accuracy_text(summary.get('metrics'), 'validation')}")
    return 0


def predict_command(args: argparse.Namespace) -> int:
    """``mmdyn-sc predict``: load a saved model onto an .h5mu, label it, write it."""
    _check_paths(args.input, args.out, args.force)
    _check_model_dir(args.model_dir)
    mdata = _read(args.input, args.h5ad_modality)

    from . import tl
    from ._data._images import IMAGE_KEY
    from ._keys import PREPARED_LAYER, Key
    from .model import MMDynamics

    if args.prepare:  # the same detection as fit's; the model's own layers are checked by load
        _check_counts(mdata, list(mdata.mod), {}, IMAGE_KEY, prepare=True)
    try:
        model = MMDynamics.load(str(args.model_dir), mdata)
    except (KeyError, ValueError) as err:
        message = _error_message(err)
        if f"layer {PREPARED_LAYER!r}" in message and not args.prepare:
            message += (f"\nThe model was trained on layers[{PREPARED_LAYER!r}]: rerun with "
                        "--prepare to compute it from the counts in .X (mmdyn_sc.pp.prepare).")
        raise CLIError(message) from err
    setup_layers = model.adata_manager.registry["setup_args"].get("layers") or {}
    _info("layers used: " + _layer_text({
        m: (".obsm (images)" if m in model.images_ else setup_layers.get(m))
        for m in model.modalities_}))
    _info(f"predicting {mdata.n_obs} cells with the model in {args.model_dir}")
    tl.predict(mdata, model, key_added=args.key_added,
               unknown_threshold=args.unknown_threshold,
               attribution=not args.no_attribution)
    _write(mdata, args.out)
    summary = mdata.uns[Key.uns.params(args.key_added)]
    metrics = summary.get("metrics") or {}
    labelled = ""
    if "query" in metrics:
        labels_key = model.adata_manager.registry["setup_args"]["labels_key"]
        labelled = (f"; labels {labels_key!r}{_accuracy_text(metrics, 'query')} on the cells "
                    "of the model's classes")
        everything = metrics.get("query_all") or {}
        if everything.get("n_unseen_class"):
            labelled += (f", {float(everything['accuracy']):.3f} on all "
                         f"{int(everything['n_labelled'])} labelled cells "
                         f"({int(everything['n_unseen_class'])} of classes the model never "
                         "saw, right only when called Unknown)")
    _info(f"predict: {mdata.n_obs} cells, {len(model.classes_)} classes{labelled}")
    return 0


# ---------------------------------------------------------------------------- parser
def _add_input_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("input", type=Path, metavar="IN.h5mu",
                        help=f"input MuData (.h5mu) to {what}; an AnnData (.h5ad) is read as "
                        "a MuData with one modality (see --h5ad-modality)")
    parser.add_argument("--h5ad-modality", default=H5AD_MODALITY, metavar="MOD",
                        help="name of the one modality of an .h5ad input (default: "
                        "%(default)s; prot/protein/adt for protein counts)")


def _add_prepare_argument(parser: argparse.ArgumentParser, command: str) -> None:
    if command == "fit":
        what = ("Without it, fit stops when an RNA or protein modality (named rna, gex, mrna, "
                "prot, protein or adt) has raw counts in .X and no layers['mmdyn_prepared'], "
                "rather than train on counts.")
    else:
        what = "Needed when the model was trained on prepared layers the input lacks."
    parser.add_argument("--prepare", action="store_true",
                        help="normalise RNA/protein raw counts in .X with mmdyn_sc.pp.prepare "
                        "(RNA: total counts 1e4 and log1p; protein: CLR) into "
                        "layers['mmdyn_prepared'] before " + command + ", saying so on stderr "
                        "(the layer is written to --out). " + what)


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, metavar="OUT.h5mu",
                        help="where to write the annotated MuData (.h5mu); the input file only "
                        "with --force")
    parser.add_argument("--key-added", default="mmdyn", metavar="KEY",
                        help="prefix of every key written (KEY_prediction, KEY_proba, ...; "
                        "default: %(default)s)")
    parser.add_argument("--force", action="store_true",
                        help="allow --out to be the input file (overwrites it)")
    parser.add_argument("--no-attribution", action="store_true",
                        help="skip the per-class feature attribution (KEY_attribution in each "
                        "modality's .varm; 16 forward and backward passes on at most 200 cells "
                        "per class)")


def build_parser() -> argparse.ArgumentParser:
    """The ``mmdyn-sc`` argument parser."""
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
                        help=f"bmmc reads {DATA_DIR_ENV} or downloads (about 40 MB; without "
                        "network it stops and names the ways out); synthetic needs nothing "
                        "(default: %(default)s)")
    p_demo.add_argument("--out", type=Path, default=Path("mmdyn_demo"),
                        help="output folder, created once there is something to write "
                        "(default: %(default)s)")
    p_demo.add_argument("--max-epochs", type=int, default=200, help="training epochs (cap)")
    p_demo.add_argument("--seed", type=int, default=0, help="random seed")
    p_demo.add_argument("--progress", action="store_true",
                        help="show a training progress bar (on stderr)")

    p_fit = sub.add_parser(
        "fit",
        help="train on an .h5mu, save the model, write the annotated .h5mu",
        description="Train MM dynamics on the labelled cells of IN.h5mu (cells with a missing "
        "label are predicted, not trained on), save the model into --model-dir and write "
        "IN.h5mu with predictions, class probabilities, modality confidences and feature "
        "weights to --out. The layer each modality trains on, progress and a summary go to "
        "stderr; stdout stays empty. Raw counts are never trained on silently: an RNA or "
        "protein modality with counts in .X and no prepared layer stops the fit with the fix "
        "(--prepare, or --layers MOD=X to train on counts).",
    )
    _add_input_argument(p_fit, "train on")
    _add_prepare_argument(p_fit, "fit")
    p_fit.add_argument("--labels", required=True, metavar="COLUMN",
                       help="label column: in .obs, as MOD:COLUMN, or a column of the one "
                       "modality whose .obs has it")
    p_fit.add_argument("--model-dir", type=Path, required=True, metavar="DIR",
                       help=f"folder to save the trained model in ({MODEL_FILE}; overwritten "
                       "if present), for `mmdyn-sc predict --model-dir`")
    _add_output_arguments(p_fit)
    p_fit.add_argument("--modalities", nargs="+", metavar="MOD",
                       help="modalities to use, in order (default: all)")
    p_fit.add_argument("--layers", nargs="+", type=_layer_spec, metavar="MOD=LAYER",
                       help="layer per modality, e.g. rna=mmdyn_prepared prot=counts; X means "
                       ".X (default: mmdyn_prepared from mmdyn_sc.pp.prepare where present, "
                       "else .X)")
    p_fit.add_argument("--recipe", choices=["default", "paper"], default="default",
                       help="default: minibatches, class-balanced loss, early stopping; paper: "
                       "the original MM dynamics recipe (default: %(default)s)")
    p_fit.add_argument("--max-epochs", type=int, metavar="N",
                       help="training epochs (cap with early stopping; default: the recipe's, "
                       "200 for default, 1000 for paper)")
    p_fit.add_argument("--seed", type=int, default=0, metavar="S",
                       help="seed of weights, train/validation split, minibatches and dropout "
                       "(default: %(default)s)")
    p_fit.add_argument("--confidence", choices=["tcp", "tcp_calibrated", "energy", "pdf"],
                       help="confidence estimator weighing each modality per cell (default: "
                       "the recipe's: energy; paper: tcp)")
    p_fit.add_argument("--modality-dropout", type=float, metavar="P",
                       help="probability of hiding each modality of a cell from the fusion "
                       "in training, for queries lacking a modality (default: the recipe's: "
                       "0.3; paper: 0)")
    p_fit.add_argument("--gate-rank", type=int, metavar="R",
                       help="low-rank feature gates (d -> R -> d) instead of the full d x d "
                       "gate, for modalities with thousands of features (default: rank 64 "
                       "for modalities with >= 2000 features, the full gate below)")
    p_fit.add_argument("--image-key", default="image", metavar="KEY",
                       help="a modality whose .obsm holds KEY, (cells, channels, S, S) images, "
                       "is an image modality (default: image)")
    p_fit.add_argument("--patch-size", type=int, metavar="P",
                       help="pixels per side of an image patch: the heatmap has one gate per "
                       "patch (default: 8; images of 128 px or more are read pooled to 64 px "
                       "and P counts pixels of the pooled image)")
    p_fit.add_argument("--transductive", action="store_true",
                       help="let the cells without a label (the query) shape the model: "
                       "the most certain of them get pseudo-labels and the model is fitted "
                       "again (about twice the time; see tl.fit)")
    p_fit.add_argument("--n-fits", type=int, metavar="K",
                       help="average the per-class attribution over K fits that differ only "
                       "in seed: steadier across seeds; each extra fit trains for half the "
                       "first fit's epochs; predictions come from the first fit (default: "
                       "tl.fit's 'auto', 2 for tabular modalities with the default recipe, "
                       "else 1; 1 for one fit)")
    p_fit.add_argument("--checkpoint-dir", type=Path, metavar="DIR",
                       help="write a training checkpoint (last.ckpt) into DIR every "
                       "--checkpoint-every epochs")
    p_fit.add_argument("--checkpoint-every", type=int, metavar="N",
                       help="epochs between checkpoints (default: 10)")
    p_fit.add_argument("--resume", action="store_true",
                       help="continue an interrupted fit from DIR/last.ckpt if it exists "
                       "(same input and options; the result equals an uninterrupted fit)")
    p_fit.add_argument("--progress", action="store_true",
                       help="show a training progress bar (on stderr)")
    p_fit.set_defaults(handler=fit_command)

    p_predict = sub.add_parser(
        "predict",
        help="label an .h5mu with a model saved by `mmdyn-sc fit`",
        description="Load the model saved in --model-dir onto IN.h5mu (the same modalities "
        "and features, matched by name; the same layers if the model used them) and write "
        "IN.h5mu with predictions, class probabilities, modality confidences and feature "
        "weights to --out. If IN.h5mu has the model's labels column, the accuracy on its "
        "labelled cells is reported on stderr.",
    )
    _add_input_argument(p_predict, "label")
    _add_prepare_argument(p_predict, "predict")
    p_predict.add_argument("--model-dir", type=Path, required=True, metavar="DIR",
                           help=f"folder with a model saved by `mmdyn-sc fit` ({MODEL_FILE})")
    _add_output_arguments(p_predict)
    p_predict.add_argument("--unknown-threshold", type=float, metavar="P",
                           help="label cells whose certainty (KEY_certainty: the calibrated "
                           "probability that the call is right, lower where the cell is far "
                           "from every class in any modality) is below P "
                           "'Unknown' (default: label every cell)")
    p_predict.set_defaults(handler=predict_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mmdyn-sc`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        if args.command == "demo":
            return demo(args.dataset, args.out, args.max_epochs, args.seed, args.progress)
        return args.handler(args)
    except (CLIError, KeyError, ValueError, TypeError, OSError) as err:
        print(f"mmdyn-sc: error: {_error_message(err)}", file=sys.stderr)
        return 2
