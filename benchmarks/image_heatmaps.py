"""Where image MM dynamics looks: patch gate vs integrated gradients vs Grad-CAM on BCCD crops.

One image size per invocation (``--size``: 32, 64 or 128 px); rows go to
``benchmarks/results/image_heatmaps_{size}.json`` and every size found there is reported in
``benchmarks/results/image_heatmaps.md``.

Data and split as part 1 of ``benchmarks/images.py``: the 351 BCCD crops read at ``--size``
px, classes with < 10 images dropped (348 images, 4 classes), a stratified 70/30 split per
seed. Per seed:

- ``default``: image-only ``tl.fit`` with every package default (recipe ``"default"``: batch
  32 with an image modality, early stopping on 10 % validation images with patience 20, MI
  on, 8-px patches of the image the branch reads (a 128-px image is read pooled to 64 px,
  ``input_size``: 16-px patches of the stored image), the gate held for ``gate_warmup`` = 5
  epochs), ``max_epochs`` capped by ``--max-epochs`` (reported).
- ``0.1.0 default``: 0.1.0's defaults: batch 128, the gate held for 50 epochs (at 197
  training images, 2 steps per epoch: the 100 steps 0.1.0 held it for) and reading the full
  image (``gate_input_size=0`` and ``input_size=0``; the default pools images of 128 px to
  64 for the whole image branch).
  ``--control-seeds N`` fits it on the first N seeds only: at 128 px it is the run's
  machine control for the fit-time ratio, and its fits are the run's longest.
- ``pixels LR``: logistic regression on the image at 16 x 16 px (RGB, standardised),
  class-balanced, ``C`` by 3-fold cross-validation on the training images.

Maps scored on the test images of the ``default`` model (the ``0.1.0 default`` gets its gate
scored): the **gate** (``obsm["mmdyn_heatmap"]``), **integrated gradients** pooled to
patches (``obsm["mmdyn_attribution"]``, the package's; its positive part for the nucleus
ratio) and **Grad-CAM** on the same CNN (the encoder's last conv layer, gradients of the
fused logit of the predicted class, ReLU of the channel-weighted map, bilinearly upsampled
and summed per patch).

- *Nucleus ratio* per test image: (map mass on the nucleus / total) / (nucleus area share),
  mean over the test images of a seed. Two masks: ``benchmarks/images.py``'s per-image Otsu
  threshold of blue / green (the target's), and the simple colour rule of the issue (blue
  exceeds green by more than 0.15 on a 0-1 scale and green below 0.5).
- *Deletion*: the top-scored ``k`` of the patches (by each map) or ``k`` random ones (3
  draws) filled with the image's mean colour; test accuracy for ``k`` a sixteenth, an eighth,
  a quarter and a half of the grid. Target: the top quarter costs more accuracy than a
  random quarter, and at least Grad-CAM's cost - 0.02. The ``0.1.0 default``'s curve is not
  measured when ``--max-epochs`` is at most its 50 held epochs (its gate never trains, so its
  map is its initialisation; at 128 px the curve took about 110 s a seed).

Each (seed, model) runs in one of ``--workers`` spawned processes, one torch thread each;
fit seconds are those of a process sharing the machine with the other workers.

Usage::

    MMDYN_SC_DATA_DIR=/work/shared/data python benchmarks/image_heatmaps.py --size 64
    python benchmarks/image_heatmaps.py --size 128 --seeds 3 --max-epochs 30 --control-seeds 1
    python benchmarks/image_heatmaps.py --report        # rewrite the .md from the JSONs
    python benchmarks/image_heatmaps.py --size 32 --quick   # smoke test, /tmp only
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LABEL = "label"
#: Deletion: shares of the grid's patches filled.
FRACTIONS = (0.0, 1 / 16, 1 / 8, 1 / 4, 1 / 2)
QUARTER = FRACTIONS.index(1 / 4)
RANDOM_DRAWS = 3
#: 0.1.0's warm-up: 100 steps = 50 epochs of 2 steps (batch 128, 197 training images).
OLD_WARMUP_EPOCHS = 50
#: What the report prints for the 0.1.0 control's deletion when its gate was held throughout.
HELD = f"not measured: the gate was held for every epoch (<= {OLD_WARMUP_EPOCHS})"
MAPS = ("gate", "integrated gradients", "Grad-CAM")


# ---------------------------------------------------------------------------- maps
def colour_mask(image: np.ndarray) -> np.ndarray:
    """The issue's colour rule on a (3, S, S) uint8 image: B - G > 0.15 and G < 0.5 (0-1)."""
    x = image.astype(np.float64) / 255.0
    return ((x[2] - x[1]) > 0.15) & (x[1] < 0.5)


def ratios(maps: np.ndarray, masks: list[np.ndarray], patch: int) -> np.ndarray:
    """Per image: (mass on the mask / total) / (mask area share); NaN without mass or mask."""
    from images import upsample

    out = np.full(len(maps), np.nan)
    for i, (grid, mask) in enumerate(zip(maps, masks, strict=True)):
        pixels = upsample(np.clip(grid.astype(np.float64), 0, None), patch)
        total = pixels.sum()
        if total > 0 and mask.any():
            out[i] = (pixels[mask].sum() / total) / mask.mean()
    return out


def grad_cam(model, mdata) -> np.ndarray:
    """Grad-CAM of the fused logit of each cell's predicted class, summed per patch."""
    import torch
    import torch.nn.functional as F

    from mmdyn_sc.model._image_attribution import patch_sums

    module = model.module.eval()
    m = model.modalities_.index("image")
    branch = module.branches[m]
    patch = branch.stored_patch_size
    images = torch.as_tensor(mdata["image"].obsm["image"])
    captured = {}
    hook = branch.encoder.convs[-1].register_forward_hook(
        lambda _mod, _inp, out: captured.__setitem__("a", out))
    out = []
    try:
        for start in range(0, len(images), 64):
            x = images[start:start + 64]
            logits = module([x], torch.ones(len(x), 1))["fused_logits"]
            score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
            act = captured["a"]
            grad, = torch.autograd.grad(score, act)
            grad = grad * (act > 0)  # through the ReLU that follows the conv
            weights = grad.mean((2, 3), keepdim=True)
            cam = torch.relu((weights * torch.relu(act)).sum(1, keepdim=True))
            cam = F.interpolate(cam, size=x.shape[-1], mode="bilinear", align_corners=False)
            out.append(patch_sums(cam[:, 0], patch).detach().numpy())
    finally:
        hook.remove()
    return np.concatenate(out)


def deletion(model, test, maps: dict[str, np.ndarray], seed: int) -> dict:
    """Test accuracy after filling the top / random k patches, per map and k."""
    from images import grey_patches, predicted, score, with_images

    images = test["image"].obsm["image"]
    y = test.obs[LABEL].to_numpy()
    grid = next(iter(maps.values())).shape[-1]
    patch = images.shape[-1] // grid
    n_patches = grid * grid
    ks = [round(f * n_patches) for f in FRACTIONS]
    rng = np.random.default_rng(1000 + seed)

    def accuracy(chosen):
        return score(y, predicted(model, with_images(test, grey_patches(images, chosen,
                                                                          patch))))["accuracy"]

    out = {"k": ks, "random": [accuracy([[]] * len(images))]}
    for k in ks[1:]:
        out["random"].append(float(np.mean([
            accuracy([rng.choice(n_patches, k, replace=False) for _ in images])
            for _ in range(RANDOM_DRAWS)])))
    for name, values in maps.items():
        order = np.argsort(-np.nan_to_num(values.reshape(len(values), -1), nan=-np.inf),
                           axis=1, kind="stable")
        out[name] = [out["random"][0]] + [accuracy([o[:k] for o in order]) for k in ks[1:]]
    return out


# ---------------------------------------------------------------------------- one seed
def pixel_regression(images, train_rows, test_rows, labels, seed: int) -> float:
    """Macro F1 of a class-balanced logistic regression on 16 x 16 px images."""
    import torch
    import torch.nn.functional as F
    from images import score
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = torch.as_tensor(images.obsm["image"]).float() / 255
    x = F.interpolate(x, size=16, mode="area").flatten(1).numpy()
    search = GridSearchCV(
        make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced",
                                                           max_iter=3000)),
        {"logisticregression__C": [0.001, 0.01, 0.1, 1.0]}, cv=3, scoring="f1_macro")
    search.fit(x[train_rows], labels[train_rows])
    return score(labels[test_rows], search.predict(x[test_rows]))["f1_macro"]


#: Options of each fitted model on top of tl.fit's defaults.
METHODS = {"default": {},
           "0.1.0 default": {"image_options": {"gate_warmup": OLD_WARMUP_EPOCHS,
                                               "gate_input_size": 0,
                                               "input_size": 0},
                             "batch_size": 128}}


def run_job(job: dict) -> list[dict]:
    """The rows of one model (and, with the default, the pixel regression) of one seed at one
    size (run in a worker process)."""
    os.environ.setdefault("MMDYN_SC_DATA_DIR", "/work/shared/data")
    sys.path.insert(0, str(HERE))
    from _harness import quiet_process

    quiet_process(1)
    from images import image_mudata, load_bccd, nucleus_mask, score, stratified_split

    import mmdyn_sc

    size, seed, max_epochs, method = job["size"], job["seed"], job["max_epochs"], job["method"]
    images, _ = load_bccd(size)
    labels = images.obs[LABEL].astype(str).to_numpy()
    train_rows, test_rows = stratified_split(labels, seed)
    rows = []
    if method == "default":
        rows.append({"size": size, "seed": seed, "method": "pixels LR",
                     "f1_macro": pixel_regression(images, train_rows, test_rows, labels, seed)})
    # One-time costs (imports, first passes) out of the timed fits.
    mmdyn_sc.tl.fit(image_mudata(images, train_rows[::5]), LABEL, max_epochs=1,
                    enable_progress_bar=False, attribution=False)
    raw = image_mudata(images, test_rows)["image"].obsm["image"]
    masks = {"otsu": [nucleus_mask(im) for im in raw], "colour": [colour_mask(im) for im in raw]}
    options = METHODS[method]
    train, test = image_mudata(images, train_rows), image_mudata(images, test_rows)
    start = time.perf_counter()
    model = mmdyn_sc.tl.fit(train, LABEL, seed=seed, enable_progress_bar=False,
                            max_epochs=max_epochs, attribution=False, **options)
    seconds = time.perf_counter() - start
    epochs = len(model.history["train_loss"])
    mmdyn_sc.tl.predict(test, model, attribution=method == "default")
    classes = test.obs["mmdyn_prediction"].astype(str).to_numpy()
    maps = {"gate": test["image"].obsm["mmdyn_heatmap"]}
    if method == "default":
        maps["integrated gradients"] = test["image"].obsm["mmdyn_attribution"]
        maps["Grad-CAM"] = grad_cam(model, test)
    patch = size // maps["gate"].shape[-1]
    # The gate on the training images (what a choice may look at; the rest is test images).
    train_raw = train["image"].obsm["image"]
    train_ratio = float(np.nanmean(ratios(train["image"].obsm["mmdyn_heatmap"],
                                          [nucleus_mask(im) for im in train_raw], patch)))
    row = {"size": size, "seed": seed, "method": method, "epochs": epochs,
           "seconds": seconds, "s_per_epoch": seconds / epochs,
           "batch_size": model.train_params_["batch_size"],
           "steps_per_epoch": int(np.ceil(len(model.train_indices)
                                          / model.train_params_["batch_size"])),
           "n_train": len(model.train_indices), "patch": patch,
           **score(test.obs[LABEL].to_numpy(), classes),
           "gate_within_sd": float(maps["gate"].reshape(len(raw), -1).std(1).mean()),
           "gate_ratio_training_images": train_ratio,
           "ratio": {name: {mask: float(np.nanmean(ratios(values, masks[mask], patch)))
                            for mask in masks} for name, values in maps.items()},
           # An untrained gate's curve says nothing of a method: under an epoch cap at or
           # below the 0.1.0 control's warm-up its gate is held for every epoch (its start).
           "deletion": (deletion(model, test, maps, seed)
                        if method == "default" or max_epochs > OLD_WARMUP_EPOCHS else None)}
    rows.append(row)
    print(f"[size {size} seed {seed}] {method}: F1 {row['f1_macro']:.3f}, {epochs} "
          f"epochs {seconds:.0f} s, ratios {json.dumps(row['ratio'])}", file=sys.stderr,
          flush=True)
    return rows


# ---------------------------------------------------------------------------- report
def _mean_sd(values, digits: int = 3) -> str:
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return f"{values.mean():.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1):.{digits}f}"


def _drop(row, name, at=QUARTER) -> float:
    d = row["deletion"]
    return d[name][0] - d[name][at]


def report_size(data: dict) -> list[str]:
    meta, rows = data["meta"], data["records"]
    size = meta["size"]
    seeds = sorted({r["seed"] for r in rows})
    default = [r for r in rows if r["method"] == "default"]
    old = [r for r in rows if r["method"] == "0.1.0 default"]
    pix = [r for r in rows if r["method"] == "pixels LR"]
    grid = size // default[0]["patch"]
    lines = [f"## {size} x {size} px ({grid} x {grid} patches of {default[0]['patch']} px), "
             f"seeds {seeds}", "",
             f"max_epochs cap {meta['max_epochs']} (early stopping on); "
             f"{meta['workers']} worker process(es) of one thread on {meta['cpus']} CPUs; "
             f"wall time {meta['wall_s'] / 60:.1f} min. Steps per epoch "
             f"{default[0]['steps_per_epoch']} at batch {default[0]['batch_size']}, "
             f"{old[0]['steps_per_epoch']} at batch {old[0]['batch_size']} "
             f"({default[0]['n_train']} training images).", "",
             "| model | macro F1 | accuracy | epochs (median) | fit s (median) | s / epoch "
             "| gate sd within image | gate ratio, training images (Otsu) |",
             "|---|---|---|---|---|---|---|---|"]
    old_seeds = sorted({r["seed"] for r in old})
    old_name = ("0.1.0 default" if old_seeds == seeds
                else f"0.1.0 default (seed{'s' * (len(old_seeds) > 1)} "
                     f"{', '.join(map(str, old_seeds))} only)")
    for name, rs in (("default", default), (old_name, old)):
        train_ratio = [r.get("gate_ratio_training_images", np.nan) for r in rs]
        lines.append(f"| {name} | {_mean_sd([r['f1_macro'] for r in rs])} | "
                     f"{_mean_sd([r['accuracy'] for r in rs])} | "
                     f"{np.median([r['epochs'] for r in rs]):.0f} | "
                     f"{np.median([r['seconds'] for r in rs]):.0f} | "
                     f"{np.median([r['s_per_epoch'] for r in rs]):.2f} | "
                     f"{_mean_sd([r['gate_within_sd'] for r in rs])} | "
                     + ("not recorded" if np.isnan(train_ratio).all()
                        else _mean_sd(train_ratio, 2)) + " |")
    lines.append(f"| pixels LR (16 x 16 px) | {_mean_sd([r['f1_macro'] for r in pix])} | | | "
                 "| | | |")
    lines += ["", "Nucleus ratio (mean over a seed's test images, then mean ± sd over seeds; "
              "min over seeds) and deletion (test accuracy lost when a quarter of the patches "
              "is filled with the image's mean colour: top-scored vs random).", "",
              "| map | ratio, Otsu mask | min seed | ratio, colour rule | drop, top quarter "
              "| drop, random quarter | top − random (seeds > 0) |",
              "|---|---|---|---|---|---|---|"]
    entries = [(f"{m} (default)", default, m) for m in MAPS] + [("gate (0.1.0 default)", old,
                                                                   "gate")]
    for label, rs, m in entries:
        otsu = [r["ratio"][m]["otsu"] for r in rs]
        colour = [r["ratio"][m]["colour"] for r in rs]
        if any(r["deletion"] is None for r in rs):
            lines.append(f"| {label} | {_mean_sd(otsu, 2)} | {min(otsu):.2f} | "
                         f"{_mean_sd(colour, 2)} | {HELD} | | |")
            continue
        top = [_drop(r, m) for r in rs]
        rand = [_drop(r, "random") for r in rs]
        diff = np.subtract(top, rand)
        lines.append(f"| {label} | {_mean_sd(otsu, 2)} | {min(otsu):.2f} | "
                     f"{_mean_sd(colour, 2)} | {_mean_sd(top)} | {_mean_sd(rand)} | "
                     f"{_mean_sd(diff)} ({int((diff > 0).sum())}/{len(diff)}) |")
    lines += ["", "Deletion curves (test accuracy, mean over seeds; k patches of "
              f"{grid * grid}):", "",
              "| k | " + " | ".join(["random", *MAPS]) + " | gate (0.1.0) |",
              "|---|" + "---|" * (len(MAPS) + 2)]
    ks = default[0]["deletion"]["k"]
    for i, k in enumerate(ks):
        cells = [np.mean([r["deletion"][n][i] for r in default]) for n in ("random", *MAPS)]
        held = any(r["deletion"] is None for r in old)
        cells.append(np.nan if held else np.mean([r["deletion"]["gate"][i] for r in old]))
        lines.append(f"| {k} | " + " | ".join("—" if np.isnan(c) else f"{c:.3f}"
                                              for c in cells) + " |")
    lines += ["", *targets(size, default, old, pix), ""]
    return lines


def targets(size, default, old, pix) -> list[str]:
    def verdict(ok):
        return "**met**" if ok else "**missed**"

    out = ["Targets (issue 20):", ""]
    if size in (64, 128):
        for m in MAPS:
            otsu = np.array([r["ratio"][m]["otsu"] for r in default])
            out.append(f"- nucleus ratio of the {m}, default options: mean {otsu.mean():.2f} "
                       f"(>= 1.5), every seed >= 1.3 (min {otsu.min():.2f}): "
                       f"{verdict(otsu.mean() >= 1.5 and otsu.min() >= 1.3)}")
    cam = np.array([_drop(r, "Grad-CAM") for r in default])
    for m in ("gate", "integrated gradients"):
        top = np.array([_drop(r, m) for r in default])
        rand = np.array([_drop(r, "random") for r in default])
        out.append(f"- deletion, {m}: top quarter costs more than a random quarter in "
                   f"{int((top > rand).sum())}/{len(top)} seeds, mean drop {top.mean():.3f} vs "
                   f"Grad-CAM's {cam.mean():.3f} - 0.02: "
                   f"{verdict(bool((top > rand).all()) and top.mean() >= cam.mean() - 0.02)}")
    if size == 64:
        new = np.array([r["f1_macro"] for r in default])
        before = np.array([r["f1_macro"] for r in old])
        lr = np.array([r["f1_macro"] for r in pix])
        out.append(f"- macro F1 {new.mean():.3f} >= 0.1.0 default's {before.mean():.3f} - 0.02 "
                   f"and above the pixel regression's {lr.mean():.3f}: "
                   f"{verdict(new.mean() >= before.mean() - 0.02 and new.mean() > lr.mean())}")
    ratio = np.median([r["seconds"] for r in default]) / np.median([r["seconds"]
                                                                     for r in old])
    out.append(f"- fit time vs the 0.1.0 default (medians): {ratio:.2f}x (<= 2x): "
               f"{verdict(ratio <= 2)}")
    return out


def write_report(out: Path) -> str:
    sizes = sorted(int(p.stem.rsplit("_", 1)[1]) for p in RESULTS.glob("image_heatmaps_*.json"))
    lines = ["# Where image MM dynamics looks: gate, integrated gradients, Grad-CAM", "",
             "Generated by `benchmarks/image_heatmaps.py` (its docstring defines every "
             "number). BCCD white-cell crops, image only, test images of stratified 70/30 "
             "splits.", ""]
    hand = RESULTS / "image_heatmaps_notes.md"
    if hand.exists():
        lines += [hand.read_text().rstrip(), ""]
    for size in sizes:
        data = json.loads((RESULTS / f"image_heatmaps_{size}.json").read_text())
        lines += report_size(data)
        lines += [f"Command: `{data['meta']['command']}`; python "
                  f"{data['meta']['python']}.", ""]
    text = "\n".join(lines)
    out.write_text(text)
    return text


# ---------------------------------------------------------------------------- main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, choices=(32, 64, 128))
    parser.add_argument("--seeds", type=int, default=None,
                        help="number of seeds (0..n-1); default 5, 3 at 128 px")
    parser.add_argument("--max-epochs", type=int, default=200,
                        help="cap on max_epochs (200: the recipe's, no cap)")
    parser.add_argument("--control-seeds", type=int, default=None,
                        help="fit the 0.1.0 control on the first N seeds only (default: all); "
                             "it is the run's machine control for the fit-time ratio")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 epochs, /tmp only")
    parser.add_argument("--report", action="store_true", help="only rewrite the .md")
    args = parser.parse_args(argv)
    out = RESULTS / "image_heatmaps.md"
    if args.report:
        print(write_report(out))
        return
    if args.size is None:
        parser.error("--size is required unless --report")
    n_seeds = args.seeds or (3 if args.size == 128 else 5)
    max_epochs = 3 if args.quick else args.max_epochs
    seeds = [0] if args.quick else list(range(n_seeds))
    control_seeds = seeds[:args.control_seeds]
    jobs = [{"size": args.size, "seed": s, "max_epochs": max_epochs, "method": m}
            for s in seeds for m in reversed(METHODS)  # the longer fit first
            if m == "default" or s in control_seeds]
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(min(args.workers, len(jobs))) as pool:
        records = [row for rows in pool.map(run_job, jobs, chunksize=1) for row in rows]
    meta = {"size": args.size, "max_epochs": max_epochs, "workers": args.workers,
            "control_seeds": control_seeds,
            "cpus": os.cpu_count(), "wall_s": time.perf_counter() - start,
            "python": platform.python_version(),
            "command": "python benchmarks/image_heatmaps.py " + " ".join(sys.argv[1:])}
    data = {"meta": meta, "records": records}
    if args.quick:
        print("\n".join(report_size(data)))
        return
    (RESULTS / f"image_heatmaps_{args.size}.json").write_text(
        json.dumps(data, indent=1, default=float))
    print(write_report(out))


if __name__ == "__main__":
    main()
