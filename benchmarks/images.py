"""Image MM dynamics benchmark: image only on BCCD crops, heatmap quality, tri-modal BMMC.

Where the model looks with the current defaults, at 32, 64 and 128 px and against integrated
gradients and Grad-CAM, is measured by ``benchmarks/image_heatmaps.py``.

Three parts, each printed as a table and written to ``benchmarks/results/images.md`` (and the
per-run rows to ``images.json``, one JSON row per line):

1. **Image only** (``/work/shared/data/bccd_wbc_crops``, 351 crops read at ``--size`` x
   ``--size`` px, default 32, with ``mmdyn_sc.pp.images_from_files``). Classes with fewer
   than 10 images are dropped (Basophil, 3 images), leaving 348 images of 4 classes. Per
   seed (0..4 by default) a stratified 70/30 train/test split (``StratifiedShuffleSplit``,
   ``random_state=seed``); ``tl.fit`` with the default recipe (class-balanced loss, z-scored
   image channels, 10 % per-class validation split of the training images for early
   stopping, patience 20) except ``batch_size`` (``--batch-size``, default 32: the recipe's
   128 gives 2 steps per epoch on ~220 training images), patches of ``size // 8`` px (an
   8 x 8 heatmap, the study's grid) and the default image options otherwise (the patch gate
   held for 100 steps, L1 weight 0.3; ``--gate-sparsity`` / ``--gate-warmup`` change them),
   **MI off** (one modality: MI could only rescale its latent), with the patch gate
   (``FI on``) and without (``FI off``). ``max_epochs`` is capped (``--max-epochs``,
   default 60) to fit the CPU budget; the cap is printed in the table header. 32 px rather
   than the study's 64 px also for the CPU budget: a 64 px fit costs 4x as much, and at 30
   epochs (about 110 steps after the warm-up) its gate had not yet left its start (heatmap
   sd within images 0.01).
2. **Heatmap quality** of the ``FI on`` models on their test images (heatmaps from
   ``model.infer``, prediction mode, no flips):

   a. *Nucleus ratio.* The nucleus is segmented on the stored RGB image by a colour rule:
      Giemsa/Wright-stained WBC nuclei are dark purple-blue, red cells and background
      pink/grey, so the ratio ``B / (G + 1)`` (blue over green, 0..255 values) is high on
      the nucleus. A pixel is nucleus when that ratio exceeds the image's Otsu threshold of
      it; connected pieces smaller than 16 px of a 64 px image (4 px at 32 px) are dropped.
      (Checked by eye on 28 images, 3-4 per class: the mask follows the lobed neutrophil and
      eosinophil nuclei and the round lymphocyte and kidney-shaped monocyte nuclei, and
      leaves out cytoplasm, granules and red cells; Otsu on the hematoxylin channel of
      ``skimage.color.rgb2hed`` gave similar but looser masks that took in monocyte
      cytoplasm and eosinophil granules.)
      The heatmap is upsampled to pixels (nearest, by the patch size). Per image,
      ``ratio = (heatmap mass on nucleus / total heatmap mass) / (nucleus area / image
      area)``: 1 = no preference, > 1 = the gate favours the nucleus. Reported: mean over
      test images of all seeds, with a bootstrap 95 % interval (2,000 resamples of the
      images). Target: mean > 1.5 and the interval above 1.
   b. *Deletion test.* The k highest-scored patches of each test image (by its own heatmap)
      are set to the image's mean colour, versus k random patches (``--random-draws`` draws,
      averaged), k in ``--deletion-k`` of the 64 patches; test accuracy and macro F1 from
      ``model.predict(query, soft=True)``. Area under each curve = mean accuracy over k
      (trapezoid on k / 64, divided by the k range). Target: top-patch deletion hurts more
      (AUC top − AUC random < 0, mean ± sd over seeds).

3. **Tri-modal** (``mmdyn_sc.datasets.bmmc_cite``, prepared and restricted to classes with
   >= 10 cells as in ``benchmarks/ablations.py``: 456 cells, 13 classes; train on donor s1d1,
   test on s1d2 and the other way). BCCD images are paired with cells **by label**
   (``pp.pair_images_by_label``): T, B and NK types -> "Lymphocyte", CD14+ monocytes ->
   "Monocyte" (CD16+ monocytes have < 10 cells and are not in the class list); erythroid
   types (Normoblast, Reticulocyte) get no image. The images of each class are split into two
   disjoint halves (alternating within the class), one per donor (``cell_groups="batch"``,
   ``image_groups``), so test cells get images never seen in training. Pairing by label
   hands the image the cell's label: **any gain from the image is an upper bound by
   construction.** Methods: ``MM dyn 3mod`` (RNA + protein + image, FI and MI on),
   ``MM dyn 3mod + mdrop`` (``modality_dropout=0.3``), ``MM static 3mod`` (FI and MI off),
   ``MM dyn rna+prot`` (the image modality not used). Every 3-modality model is scored with
   the test images as they are (``full``), all pixels set to 128 (``grey``: the study's
   masking test) and with the image modality removed from the test MuData (``-image``).
   Default recipe, same ``max_epochs`` cap as part 1.

Metrics: ``mmdyn_sc._metrics.classification_metrics`` (macro F1 over the labels present in
the test labels or the predictions, balanced accuracy = mean recall over the test classes).
One torch/BLAS thread (a shared 2-core machine). The progress log goes to stderr; keep it
out of the repository.

Usage::

    MMDYN_SC_DATA_DIR=/work/shared/data nice -n 10 python benchmarks/images.py 2> /tmp/images.log
    python benchmarks/images.py --quick          # 1 seed, 3 epochs, written to /tmp only
    python benchmarks/images.py --parts trimodal --trimodal-seeds 2   # seeds 0, 1; keeps part 1
    python benchmarks/images.py --from-json benchmarks/results/images.json   # rewrites the .md

``meta["findings"]`` in the JSON (diagnostic notes added by hand, e.g. from probes run
outside this script) is printed under "Findings and diagnostics".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from _data import DIRECTIONS, donor, load_bmmc
from _harness import add_seeds_argument, fmt, quiet_process, score, timed

RESULTS = Path(__file__).resolve().parent / "results" / "images.md"
BCCD = Path("/work/shared/data/bccd_wbc_crops")
IMAGE_SIZE = 32
GRID = 8
MIN_IMAGES = 10
TEST_SIZE = 0.3
LABEL = "label"
MDROP = 0.3
GREY = 128
MIN_NUCLEUS_PIECE = 16
N_BOOT = 2000
#: A heatmap whose largest patch gate is below this has closed on the whole image.
CLOSED = 1e-4
METRICS = (("f1_macro", "macro F1"), ("balanced_accuracy", "balanced acc"),
           ("accuracy", "accuracy"))
UPPER_BOUND = ("**Caveat: images are paired with cells by label, so the image carries the "
               "cell's (coarse) label by construction; any gain from the image modality is an "
               "upper bound, not evidence that images of the same cells would help.**")
#: Tri-modal methods: name -> (tl.fit options, modalities used, scored without the image).
TRIMODAL = {
    "MM dyn 3mod": ({}, ("rna", "prot", "image")),
    "MM static 3mod": ({"feature_informativeness": False, "modality_informativeness": False},
                       ("rna", "prot", "image")),
    "MM dyn rna+prot": ({}, ("rna", "prot")),
    "MM dyn 3mod + mdrop": ({"modality_dropout": MDROP}, ("rna", "prot", "image")),
}


# ---------------------------------------------------------------------------- data
def load_bccd(size: int = IMAGE_SIZE):
    """BCCD crops as an image AnnData (``obs[LABEL]``), classes with < MIN_IMAGES dropped.

    Returns the AnnData and the dropped classes with their counts.
    """
    import pandas as pd

    import mmdyn_sc

    index = pd.read_csv(BCCD / "index.csv")
    index.index = [Path(p).stem for p in index["path"]]
    counts = index[LABEL].value_counts()
    dropped = {str(k): int(v) for k, v in counts.items() if v < MIN_IMAGES}
    index = index[~index[LABEL].isin(list(dropped))]
    images = mmdyn_sc.pp.images_from_files(index["path"], root=BCCD, obs=index, size=size)
    return images, dropped


def image_mudata(images, rows=None):
    """An image-only MuData (modality ``"image"``) of ``images[rows]`` with ``obs[LABEL]``."""
    import mudata as md

    part = images if rows is None else images[rows]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mdata = md.MuData({"image": part.copy()})
    mdata.obs[LABEL] = part.obs[LABEL].astype(str).to_numpy()
    return mdata


def stratified_split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test row indices: stratified, TEST_SIZE of the images in the test set."""
    from sklearn.model_selection import StratifiedShuffleSplit

    split = StratifiedShuffleSplit(1, test_size=TEST_SIZE, random_state=seed)
    train, test = next(split.split(np.zeros(len(labels)), labels))
    return np.sort(train), np.sort(test)


def with_images(mdata, images: np.ndarray):
    """A copy of an image-only MuData whose images are replaced by ``images``."""
    out = mdata.copy()
    out["image"].obsm["image"] = images
    return out


# ---------------------------------------------------------------------------- predictions
def predicted(model, query) -> np.ndarray:
    """Predicted labels of ``query`` (``model.predict(..., soft=True)``, arg max)."""
    proba = model.predict(query, soft=True)
    return np.asarray(proba.columns, dtype=object)[proba.to_numpy().argmax(1)]


def patch_of(images: np.ndarray, heatmaps: np.ndarray) -> int:
    """Patch side: image side / heatmap side."""
    return images.shape[-1] // heatmaps.shape[-1]


def patch_size_for(size: int) -> int:
    """The patch side that gives a GRID x GRID heatmap of ``size``-px images, default options.

    ``size // GRID``, or less where the image branch reads the image pooled (``input_size``:
    images of 128 px or more).
    """
    from mmdyn_sc.module import DEFAULT_IMAGE_OPTIONS
    from mmdyn_sc.module._image_branch import input_pool_factor

    for pool in (8, 4, 2):
        patch = size // pool // GRID
        if patch and input_pool_factor(size, {**DEFAULT_IMAGE_OPTIONS,
                                              "patch_size": patch}) == pool:
            return patch
    return size // GRID


def fit(train, seed: int, args, **options):
    """``tl.fit`` on ``train`` (in place) with the benchmark's epoch cap, batch size and
    patch size (a GRID x GRID heatmap: :func:`patch_size_for`); returns (model, seconds)."""
    import mmdyn_sc

    return timed(mmdyn_sc.tl.fit, train, LABEL, seed=seed, enable_progress_bar=False,
                 max_epochs=args.max_epochs, batch_size=args.batch_size,
                 image_options={"patch_size": patch_size_for(args.size), **args.image_options},
                 **options)


def fit_info(model, train, seconds: float) -> dict:
    """Epochs, fit time and validation macro F1 of a fitted model."""
    return {"epochs": len(model.history["train_loss"]), "seconds": seconds,
            "val_f1_macro": float(train.uns["mmdyn"]["metrics"]["validation"]["f1_macro"])}


# ---------------------------------------------------------------------------- heatmaps
def nucleus_mask(image: np.ndarray) -> np.ndarray:
    """Boolean (S, S) nucleus mask of a (3, S, S) uint8 RGB image (see the module docstring).

    Blue over green, ``B / (G + 1)``, above its Otsu threshold; pieces smaller than 16 px
    of a 64 px image (4 px at 32 px: the same share of the image) dropped.
    """
    from skimage.filters import threshold_otsu
    from skimage.morphology import remove_small_objects

    rgb = image.astype(np.float64)
    ratio = rgb[2] / (rgb[1] + 1.0)
    mask = ratio > threshold_otsu(ratio)
    min_piece = max(1, round(MIN_NUCLEUS_PIECE * (image.shape[-1] / 64) ** 2))
    return remove_small_objects(mask, max_size=min_piece - 1)


def upsample(heatmap: np.ndarray, patch: int) -> np.ndarray:
    """(grid, grid) -> (grid * patch, grid * patch) by nearest-neighbour repetition."""
    return np.kron(heatmap, np.ones((patch, patch), dtype=heatmap.dtype))


def nucleus_ratio(heatmap: np.ndarray, mask: np.ndarray, patch: int) -> float:
    """(heatmap mass on the nucleus / total mass) / (nucleus area / image area).

    NaN for a closed heatmap (every patch gate < CLOSED: the ratio of rounding residue
    would mean nothing) or an empty mask.
    """
    pixels = upsample(heatmap.astype(np.float64), patch)
    total = pixels.sum()
    if heatmap.max() < CLOSED or total <= 0 or not mask.any():
        return float("nan")
    return float((pixels[mask].sum() / total) / mask.mean())


def bootstrap_ci(values, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """Percentile 95 % interval of the mean, resampling ``values`` with replacement."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = rng.choice(values, (n_boot, len(values))).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def grey_patches(images: np.ndarray, patches: list[np.ndarray], patch: int) -> np.ndarray:
    """Copy of (n, 3, S, S) uint8 images with the listed patches set to each image's mean colour.

    ``patches[i]`` holds flat patch indices (row-major over the grid) of image ``i``.
    """
    out = images.copy()
    grid = images.shape[-1] // patch
    for i, chosen in enumerate(patches):
        colour = np.rint(images[i].reshape(images.shape[1], -1).mean(1)).astype(images.dtype)
        for flat in chosen:
            r, c = divmod(int(flat), grid)
            out[i, :, r * patch:(r + 1) * patch, c * patch:(c + 1) * patch] = colour[:, None, None]
    return out


def curve_auc(ks, values) -> float:
    """Mean of a curve over k: trapezoid area on k divided by the k range."""
    ks, values = np.asarray(ks, dtype=float), np.asarray(values, dtype=float)
    return float(np.trapezoid(values, ks) / (ks[-1] - ks[0]))


def deletion_test(model, test, heatmaps: np.ndarray, ks, draws: int, seed: int) -> dict:
    """Accuracy and macro F1 after greying the k top-scored vs k random patches, per k."""
    images = test["image"].obsm["image"]
    patch = patch_of(images, heatmaps)
    y = test.obs[LABEL].to_numpy()
    n_patches = heatmaps.shape[1] * heatmaps.shape[2]
    order = np.argsort(-heatmaps.reshape(len(heatmaps), -1), axis=1, kind="stable")
    rng = np.random.default_rng(1000 + seed)
    out = {"k": list(ks), "top_accuracy": [], "top_f1_macro": [], "random_accuracy": [],
           "random_f1_macro": []}
    for k in ks:
        top = score(y, predicted(model, with_images(test, grey_patches(
            images, [o[:k] for o in order], patch))))
        rand = [score(y, predicted(model, with_images(test, grey_patches(
            images, [rng.choice(n_patches, k, replace=False) for _ in order], patch))))
            for _ in range(draws if k else 1)]
        for name in ("accuracy", "f1_macro"):
            out[f"top_{name}"].append(top[name])
            out[f"random_{name}"].append(float(np.mean([r[name] for r in rand])))
    return out


# ---------------------------------------------------------------------------- part 1 + 2
def run_image_only(args, log) -> list[dict]:
    """Part 1 (FI on / off, image only) and part 2 (heatmaps of the FI-on models)."""
    images, dropped = load_bccd(args.size)
    log(f"BCCD: {images.n_obs} images, classes {images.obs[LABEL].value_counts().to_dict()}, "
        f"dropped {dropped}")
    labels = images.obs[LABEL].astype(str).to_numpy()
    records = []
    for seed in args.seeds:
        train_rows, test_rows = stratified_split(labels, seed)
        test = image_mudata(images, test_rows)
        y_test = test.obs[LABEL].to_numpy()
        for method, fi in (("FI on", True), ("FI off", False)):
            train = image_mudata(images, train_rows)
            model, seconds = fit(train, seed, args, feature_informativeness=fi,
                                 modality_informativeness=False)
            result = model.infer(test)
            classes = np.asarray(model.classes_, dtype=object)
            row = {"part": "image_only", "seed": seed, "method": method,
                   "n_train": len(train_rows), "n_test": len(test_rows),
                   **score(y_test, classes[result.proba.argmax(1)]),
                   **fit_info(model, train, seconds)}
            if fi:
                heat = result.heatmaps[model.modalities_.index("image")]
                row["heatmap_mean"] = float(heat.mean())
                row["heatmap_within_sd"] = float(heat.reshape(len(heat), -1).std(1).mean())
                row["heatmap_closed"] = float((heat.reshape(len(heat), -1).max(1)
                                               < CLOSED).mean())
                records.append(nucleus_record(seed, test, heat))
                records.append({"part": "deletion", "seed": seed,
                                **deletion_test(model, test, heat, args.deletion_k,
                                                args.random_draws, seed)})
                d = records[-1]
                log(f"seed {seed} nucleus ratio {nan_mean(records[-2]['ratio']):.2f}; "
                    f"deletion top acc {np.round(d['top_accuracy'], 2).tolist()} random "
                    f"{np.round(d['random_accuracy'], 2).tolist()}")
            records.append(row)
            log(f"seed {seed} {method}: macro F1 {row['f1_macro']:.3f} bal acc "
                f"{row['balanced_accuracy']:.3f} | val {row['val_f1_macro']:.3f} | "
                f"{row['epochs']} epochs {seconds:.0f}s"
                + (f" | heatmap mean {row['heatmap_mean']:.3f} within-image sd "
                   f"{row['heatmap_within_sd']:.3f} closed {row['heatmap_closed']:.2f}"
                   if fi else ""))
    return records


def none_if_nan(value: float) -> float | None:
    """NaN as None (JSON null)."""
    return None if not np.isfinite(value) else value


def nucleus_record(seed: int, test, heatmaps: np.ndarray) -> dict:
    """Per test image: nucleus ratio and nucleus area share (part 2a)."""
    images = test["image"].obsm["image"]
    masks = [nucleus_mask(im) for im in images]
    patch = patch_of(images, heatmaps)
    return {"part": "nucleus", "seed": seed,
            "ratio": [none_if_nan(nucleus_ratio(h, m, patch))
                      for h, m in zip(heatmaps, masks, strict=True)],
            "area": [float(m.mean()) for m in masks],
            "label": test.obs[LABEL].astype(str).tolist()}


# ---------------------------------------------------------------------------- part 3
def image_mapping(classes) -> dict[str, str]:
    """BMMC class -> BCCD class: T, B, NK types -> Lymphocyte, CD14+/CD16+ Mono -> Monocyte."""
    mapping = {}
    for c in classes:
        words = set(c.split())
        if "Mono" in words:
            mapping[c] = "Monocyte"
        elif words & {"T", "B", "NK"}:
            mapping[c] = "Lymphocyte"
    return mapping


def image_halves(images) -> np.ndarray:
    """Donor group per image: alternate the images of each class between s1d1 and s1d2."""
    rank = images.obs.groupby(LABEL).cumcount().to_numpy()
    return np.where(rank % 2 == 0, "s1d1", "s1d2")


def without_image(mdata):
    """The cells of ``mdata`` as a MuData with RNA and protein only."""
    import mudata as md

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        query = md.MuData({m: mdata.mod[m][mdata.obs_names].copy() for m in ("rna", "prot")})
    query.obs[LABEL] = mdata.obs[LABEL].to_numpy()
    return query


def greyed(mdata):
    """A copy of ``mdata`` whose images are all GREY."""
    out = mdata.copy()
    out["image"].obsm["image"] = np.full_like(out["image"].obsm["image"], GREY)
    return out


def image_use(model, test) -> dict:
    """Imaged test cells: share of closed heatmaps (FI) and mean fusion weight of the image."""
    if "image" not in model.modalities_:
        return {}
    result = model.infer(test)
    m = model.modalities_.index("image")
    imaged = result.present[:, m].astype(bool)
    out = {"image_weight": float(result.weights[imaged, m].mean())}
    if result.heatmaps[m] is not None:
        heat = result.heatmaps[m][imaged]
        out["heatmap_closed"] = float((heat.reshape(len(heat), -1).max(1) < CLOSED).mean())
    return out


def run_trimodal(args, log) -> tuple[list[dict], dict]:
    """Part 3: rows per (direction, seed, method, condition), and the pairing summary."""
    import mmdyn_sc

    data, classes = load_bmmc()
    data.obs[LABEL] = data.obs["cell_type"].astype(str)
    images, _ = load_bccd(args.size)
    mapping = image_mapping(classes)
    groups = image_halves(images)
    info = {"mapping": mapping, "classes": classes,
            "images_per_half": {g: images.obs[LABEL][groups == g].value_counts().to_dict()
                                for g in ("s1d1", "s1d2")}}
    log(f"tri-modal mapping {mapping}")
    directions = DIRECTIONS[:1] if args.quick else DIRECTIONS
    methods = [m for m in TRIMODAL if args.mdrop or "mdrop" not in m]
    records = []
    for seed in args.trimodal_seeds:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            paired = mmdyn_sc.pp.pair_images_by_label(
                data, images, mapping, labels_key=LABEL, cell_groups="batch",
                image_groups=groups, seed=seed)
        info["n_reused"] = int(paired.uns["image_pairing"]["n_reused"])
        for a, b in directions:
            test = donor(paired, b)
            info[f"imaged_{b}"] = f"{test['image'].n_obs} / {test.n_obs}"
            y_test = test.obs[LABEL].to_numpy()
            for method in methods:
                options, mods = TRIMODAL[method]
                train = donor(paired, a)
                model, seconds = fit(train, seed, args, modalities=list(mods), **options)
                common = {"part": "trimodal", "split": f"{a}→{b}", "seed": seed,
                          "method": method, **fit_info(model, train, seconds),
                          **image_use(model, test)}
                queries = {"full": test}
                if "image" in mods:
                    queries.update({"grey": greyed(test), "-image": without_image(test)})
                for condition, query in queries.items():
                    records.append({**common, "condition": condition,
                                    **score(y_test, predicted(model, query))})
                log(f"{a}→{b} seed {seed} {method}: " + ", ".join(
                    f"{r['condition']} {r['f1_macro']:.3f}"
                    for r in records[-len(queries):]) + f" | {common['epochs']} epochs "
                    f"{seconds:.0f}s")
    return records, info


# ---------------------------------------------------------------------------- report
def verdict(ok: bool) -> str:
    return "**PASS**" if ok else "**MISS**"


def report_image_only(records, meta) -> list[str]:
    rows = [r for r in records if r["part"] == "image_only"]
    if not rows:
        return []
    seeds = sorted({r["seed"] for r in rows})
    lines = ["## 1. Image only (BCCD crops)", "",
             f"{meta['bccd']}; seeds {seeds}; MI off (single modality), default recipe, "
             f"max_epochs {meta['max_epochs']} (early stopping patience 20), batch size "
             f"{meta.get('batch_size', 128)}, {meta.get('size', 64)} x {meta.get('size', 64)} "
             f"px, {meta.get('size', 64) // GRID}-px patches (an {GRID} x {GRID} heatmap), "
             f"image options {meta.get('image_options') or 'the defaults'} otherwise. "
             f"mean ± sd over seeds.", "",
             "| method | " + " | ".join(h for _, h in METRICS)
             + " | val macro F1 | epochs | fit s | heatmap mean | within-image sd "
             "| closed heatmaps |", "|---|" + "---|" * (len(METRICS) + 6)]
    for method in ("FI on", "FI off"):
        rs = [r for r in rows if r["method"] == method]
        if not rs:
            continue
        cells = [fmt([r[k] for r in rs]) for k, _ in METRICS]
        extra = [fmt([r.get("heatmap_mean") for r in rs]),
                 fmt([r.get("heatmap_within_sd") for r in rs]),
                 fmt([r.get("heatmap_closed") for r in rs], 2)]
        lines.append(f"| {method} | " + " | ".join(cells)
                     + f" | {fmt([r['val_f1_macro'] for r in rs])} | "
                     f"{np.median([r['epochs'] for r in rs]):.0f} | "
                     f"{np.median([r['seconds'] for r in rs]):.0f} | " + " | ".join(extra) + " |")
    lines.append("")
    return lines


def nan_mean(values) -> float:
    """Mean of the finite values (NaN if none)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else float("nan")


def report_heatmaps(records) -> list[str]:
    nuc = [r for r in records if r["part"] == "nucleus"]
    dele = [r for r in records if r["part"] == "deletion"]
    if not nuc:
        return []
    ratios = np.concatenate([np.asarray(r["ratio"], dtype=float) for r in nuc])
    areas = np.concatenate([r["area"] for r in nuc])
    labels = np.concatenate([r["label"] for r in nuc])
    ok = np.isfinite(ratios)
    lo, hi = bootstrap_ci(ratios)
    mean = nan_mean(ratios)
    lines = ["## 2. Heatmap quality (FI-on models, test images)", "",
             "### 2a. Heatmap mass on the nucleus", "",
             "Ratio = (heatmap mass on nucleus / total) / (nucleus area / image area); "
             "nucleus = blue/green colour ratio above its per-image Otsu threshold "
             f"(module docstring). Pooled over {len(nuc)} seed(s) and their test images; "
             f"bootstrap 95 % interval over images. 'closed' = heatmaps whose every patch "
             f"gate is < {CLOSED:g} (the gate shut the whole image; no ratio).", "",
             "| classes | test images | closed | nucleus area share | mean ratio (open) "
             "| 95 % interval |", "|---|---|---|---|---|---|",
             f"| all | {len(ratios)} | {int((~ok).sum())} | {np.mean(areas):.3f} | "
             f"{mean:.3f} | [{lo:.3f}, {hi:.3f}] |"]
    for c in sorted(set(labels)):
        sel = labels == c
        clo, chi = bootstrap_ci(ratios[sel])
        lines.append(f"| {c} | {sel.sum()} | {int((~ok[sel]).sum())} | "
                     f"{areas[sel].mean():.3f} | {nan_mean(ratios[sel]):.3f} | "
                     f"[{clo:.3f}, {chi:.3f}] |")
    per_seed = ", ".join(f"seed {r['seed']} {nan_mean(r['ratio']):.2f}" for r in nuc)
    met = bool(ok.any() and mean > 1.5 and lo > 1)
    if not ok.any():
        lines += ["", "Every test heatmap is closed: the patch gate shut the whole image, the "
                  "FI-on branch sees an all-zero image and predicts one class per seed "
                  "(balanced accuracy 0.25 in part 1), so the ratio is undefined and the "
                  "deletion curves below are flat by construction."]
    lines += ["", f"Per seed (mean ratio over open heatmaps): {per_seed}.", "",
              f"Target mean > 1.5 and interval above 1: mean {mean:.2f}, interval "
              f"[{lo:.2f}, {hi:.2f}]" + ("" if ok.any() else " (every heatmap closed)")
              + f" → {verdict(met)}", ""]
    if dele:
        lines += report_deletion(dele)
    return lines


def report_deletion(dele) -> list[str]:
    ks = dele[0]["k"]
    n_grid = GRID
    lines = ["### 2b. Deletion test", "",
             f"k of the {n_grid * n_grid} patches set to the image's mean colour: the k "
             "highest-scored (own heatmap) vs k random (mean of the random draws); test "
             f"accuracy / macro F1, mean ± sd over {len(dele)} seed(s).", "",
             "| k | top: accuracy | random: accuracy | top: macro F1 | random: macro F1 |",
             "|---|---|---|---|---|"]
    for i, k in enumerate(ks):
        lines.append(f"| {k} | " + " | ".join(
            fmt([r[f"{which}_{m}"][i] for r in dele])
            for m in ("accuracy", "f1_macro") for which in ("top", "random")) + " |")
    lines += ["", "| metric | AUC top | AUC random | top − random |", "|---|---|---|---|"]
    verdicts = {}
    for m in ("accuracy", "f1_macro"):
        top = [curve_auc(ks, r[f"top_{m}"]) for r in dele]
        rand = [curve_auc(ks, r[f"random_{m}"]) for r in dele]
        diff = np.subtract(top, rand)
        verdicts[m] = diff
        lines.append(f"| {m} | {fmt(top)} | {fmt(rand)} | {fmt(diff)} |")
    d = verdicts["accuracy"]
    sd = d.std(ddof=1) if len(d) > 1 else 0.0
    lines += ["", f"Target: accuracy falls faster for top patches (AUC top − random < 0): "
              f"{d.mean():+.3f} ± {sd:.3f}, {int((d < 0).sum())} of {len(d)} seeds negative "
              f"→ {verdict(d.mean() < 0)}", ""]
    return lines


def report_trimodal(records, meta) -> list[str]:
    rows = [r for r in records if r["part"] == "trimodal"]
    if not rows:
        return []
    info = meta.get("trimodal", {})
    splits = sorted({r["split"] for r in rows})
    seeds = sorted({r["seed"] for r in rows})
    lines = ["## 3. Tri-modal: BMMC CITE-seq + BCCD images paired by label", "",
             UPPER_BOUND, "",
             f"Train on one donor, test on the other ({', '.join(splits)}), seeds {seeds}: "
             f"mean ± sd over {len(splits) * len(seeds)} runs; default recipe, max_epochs "
             f"{meta['max_epochs']}. Mapping: {mapping_text(info.get('mapping', {}))}; other "
             "types (Normoblast, Reticulocyte) no image. "
             f"Imaged test cells: s1d2 {info.get('imaged_s1d2', '?')}, s1d1 "
             f"{info.get('imaged_s1d1', '?')}; images per donor half "
             f"{info.get('images_per_half')}. Conditions: `full`; `grey` = every test image "
             "all 128; `-image` = image modality removed from the test MuData. 'image weight' = "
             "mean factor the image latent was scaled by in the fusion (imaged test cells; 1 "
             "without MI); 'closed' = share of imaged test cells whose heatmap is < "
             f"{CLOSED:g} everywhere.", "",
             "| method | condition | " + " | ".join(h for _, h in METRICS)
             + " | epochs | fit s | image weight | closed heatmaps |",
             "|---|---|" + "---|" * (len(METRICS) + 4)]
    for method in TRIMODAL:
        for cond in ("full", "grey", "-image"):
            rs = [r for r in rows if r["method"] == method and r["condition"] == cond]
            if not rs:
                continue
            lines.append(f"| {method} | {cond} | "
                         + " | ".join(fmt([r[k] for r in rs]) for k, _ in METRICS)
                         + f" | {np.median([r['epochs'] for r in rs]):.0f} | "
                         f"{np.median([r['seconds'] for r in rs]):.0f} | "
                         + (f"{fmt([r.get('image_weight') for r in rs], 2)} | "
                            f"{fmt([r.get('heatmap_closed') for r in rs], 2)} |"
                            if cond == "full" else " | |"))
    lines += ["", "Paired differences in macro F1 (points, mean ± sd over runs):", ""]
    for a, b in ((("MM dyn 3mod", "full"), ("MM dyn rna+prot", "full")),
                 (("MM dyn 3mod", "full"), ("MM static 3mod", "full")),
                 (("MM dyn 3mod", "grey"), ("MM static 3mod", "grey")),
                 (("MM dyn 3mod", "grey"), ("MM dyn rna+prot", "full")),
                 (("MM dyn 3mod", "-image"), ("MM dyn rna+prot", "full")),
                 (("MM dyn 3mod + mdrop", "grey"), ("MM dyn rna+prot", "full")),
                 (("MM dyn 3mod + mdrop", "-image"), ("MM dyn rna+prot", "full"))):
        d = paired_diff(rows, a, b)
        if len(d):
            sd = d.std(ddof=1) if len(d) > 1 else 0.0
            lines.append(f"- {a[0]} ({a[1]}) − {b[0]} ({b[1]}): {d.mean():+.1f} ± {sd:.1f}")
    lines.append("")
    return lines


def mapping_text(mapping: dict) -> str:
    """``{cell type: image class}`` as 'Image class <- type, type; ...'."""
    by_class: dict[str, list[str]] = {}
    for cell_type, image_class in mapping.items():
        by_class.setdefault(image_class, []).append(cell_type)
    return "; ".join(f"{k} <- {', '.join(v)}" for k, v in sorted(by_class.items()))


def paired_diff(rows, a, b, metric="f1_macro") -> np.ndarray:
    """Per (split, seed): 100 x (metric of a − metric of b); a, b = (method, condition)."""
    index = {(r["split"], r["seed"]): r[metric] for r in rows
             if (r["method"], r["condition"]) == b}
    return np.asarray([100 * (r[metric] - index[(r["split"], r["seed"])]) for r in rows
                       if (r["method"], r["condition"]) == a
                       and (r["split"], r["seed"]) in index])


def report(records, meta) -> str:
    lines = ["# Image MM dynamics benchmark", ""]
    if meta.get("quick"):
        lines += ["QUICK SMOKE TEST (1 seed, few epochs): not a result.", ""]
    lines += report_image_only(records, meta) + report_heatmaps(records)
    lines += report_trimodal(records, meta)
    if meta.get("findings"):
        lines += ["## Findings and diagnostics", ""]
        lines += [f"- {note}" for note in meta["findings"]] + [""]
    lines += [f"- {note}" for note in meta.get("notes", [])] + [""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main
def write_json(path: Path, meta: dict, records: list[dict]) -> None:
    """``{"meta": ..., "records": [...]}`` with one record per line."""
    body = ",\n".join(json.dumps(r, default=float) for r in records)
    path.write_text(f'{{"meta": {json.dumps(meta, indent=1, default=float)},\n'
                    f'"records": [\n{body}\n]}}\n')


def command_line() -> str:
    return "python benchmarks/images.py " + " ".join(sys.argv[1:])


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", choices=("image", "trimodal"),
                        default=["image", "trimodal"],
                        help="parts to run; rows of parts not run are kept from the JSON")
    add_seeds_argument(parser, 5, what="image-only seeds (parts 1 and 2)")
    add_seeds_argument(parser, 1, flag="--trimodal-seeds",
                       what="seeds per BMMC direction (part 3)")
    parser.add_argument("--max-epochs", type=int, default=60,
                        help="cap on tl.fit's max_epochs (early stopping stays on)")
    parser.add_argument("--size", type=int, default=IMAGE_SIZE,
                        help=f"image side in pixels; a {GRID} x {GRID} heatmap")
    parser.add_argument("--gate-sparsity", type=float, default=None,
                        help="image option gate_sparsity (default: the package's)")
    parser.add_argument("--gate-warmup", type=int, default=None,
                        help="image option gate_warmup (default: the package's)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="tl.fit batch size (the default recipe's 128 gives 2 steps "
                             "per epoch on ~220 training images)")
    parser.add_argument("--deletion-k", type=int, nargs="+", default=[0, 4, 8, 16, 32])
    parser.add_argument("--random-draws", type=int, default=3)
    parser.add_argument("--no-mdrop", dest="mdrop", action="store_false",
                        help="skip the modality_dropout=0.3 tri-modal variant")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: seed 0, 3 epochs, one direction; writes to /tmp")
    parser.add_argument("--out", type=Path, default=None, help="markdown output")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="rebuild the tables from saved rows without fitting")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    args.image_options = {name: value for name, value in (
        ("gate_sparsity", args.gate_sparsity), ("gate_warmup", args.gate_warmup))
        if value is not None}
    if args.quick:
        args.seeds, args.trimodal_seeds, args.max_epochs = [0], [0], 3
        args.random_draws = 1
    if args.out is None:
        args.out = Path("/tmp/images_quick.md") if args.quick else RESULTS
    return args


def main(argv=None):
    args = parse(argv)
    if args.from_json is not None:
        data = json.loads(args.from_json.read_text())
        text = report(data["records"], data["meta"])
        print(text)
        if args.from_json.resolve() == args.out.with_suffix(".json").resolve():
            args.out.write_text(text)  # the markdown next to the JSON it was built from
        return
    os.environ.setdefault("MMDYN_SC_DATA_DIR", "/work/shared/data")
    quiet_process(args.threads)
    t0 = time.perf_counter()

    def log(msg):
        print(f"[images {time.perf_counter() - t0:7.0f}s] {msg}", file=sys.stderr, flush=True)

    out_json = args.out.with_suffix(".json")
    records, meta = [], {}
    if out_json.exists() and not args.quick:
        saved = json.loads(out_json.read_text())
        keep = {"image": ("image_only", "nucleus", "deletion"), "trimodal": ("trimodal",)}
        drop = {p for part in args.parts for p in keep[part]}
        records = [r for r in saved["records"] if r["part"] not in drop]
        meta = saved["meta"]
    meta.update({"max_epochs": args.max_epochs, "quick": args.quick, "size": args.size,
                 "image_options": args.image_options,
                 "batch_size": args.batch_size,
                 "bccd": "351 BCCD crops; classes with < 10 images dropped (Basophil, 3): "
                         "348 images, 4 classes; stratified 70/30 split per seed"})
    part_seconds = dict(meta.get("part_seconds", {}))
    if "image" in args.parts:
        start = time.perf_counter()
        records += run_image_only(args, log)
        part_seconds["image"] = time.perf_counter() - start
    if "trimodal" in args.parts:
        start = time.perf_counter()
        new, meta["trimodal"] = run_trimodal(args, log)
        records += new
        part_seconds["trimodal"] = time.perf_counter() - start
    meta["part_seconds"] = part_seconds
    meta.setdefault("commands", {})
    for part in args.parts:
        meta["commands"][part] = command_line()
    meta["notes"] = [
        "Wall time per part: " + ", ".join(f"{k} {v / 60:.1f} min"
                                           for k, v in part_seconds.items())
        + f"; python {platform.python_version()}, {os.cpu_count()} CPU(s), "
        f"{args.threads} thread(s), nice 10 on a shared machine.",
        "Commands: " + "; ".join(f"{k}: `{v}`" for k, v in meta["commands"].items()),
    ]
    text = report(records, meta)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    write_json(out_json, meta, records)
    print(f"wrote {args.out} and {out_json}", file=sys.stderr)


if __name__ == "__main__":
    main()
