"""Which patch size at 128 px? A probe that looks at training images only (issue 20).

For each seed (the splits of ``image_heatmaps.py``), image-only ``tl.fit`` with every default
but ``image_options={"patch_size": p}`` for each ``--patches`` value, capped at
``--max-epochs`` (0: the recipe's own limit, with early stopping), on the 128-px images
average-pooled by each ``--pools`` factor (1: as read; 2: the model reads 64 px, which is
what a branch that pools its whole input would see); then, on the fit's **training** images
(the test images are not scored):

- the gate's nucleus ratio (``image_heatmaps.ratios``, Otsu mask of ``images.nucleus_mask``
  on the 128-px image, whatever the model read) and Grad-CAM's;
- the accuracy lost when the top quarter of the patches by the gate, by Grad-CAM (same model)
  or at random (3 draws) is filled with the image's mean colour (``image_heatmaps.deletion``);
- the best validation macro F1 of the fit's history (its own validation images), epochs and
  s / epoch.

The decision rules are in ``results/image_heatmaps_notes.md`` ("16-px patches?", "The
whole branch at 64 px?"). One JSON
record per fit goes to ``--out`` (JSON lines), the table to stdout.

Usage::

    MMDYN_SC_DATA_DIR=/work/shared/data python benchmarks/image_patch_size.py \\
        --out benchmarks/results/image_patch_size.jsonl          # ~25 min, 2 cores
    python benchmarks/image_patch_size.py --seeds 5 --patches 8 --pools 1 2 \\
        --max-epochs 0 --out benchmarks/results/image_pool.jsonl
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SIZE = 128


def pooled(images, factor: int):
    """``images`` (an image AnnData) with every image average-pooled ``factor`` x ``factor``."""
    if factor == 1:
        return images
    out = images.copy()
    x = images.obsm["image"].astype(np.float64)
    n, c, s, _ = x.shape
    x = x.reshape(n, c, s // factor, factor, s // factor, factor).mean((3, 5))
    out.obsm["image"] = np.rint(x).astype(images.obsm["image"].dtype)
    out.uns["image"] = {**images.uns["image"], "size": s // factor}
    return out


def run_job(job: tuple[int, int, int, int]) -> dict:
    """One fit (patch size, pooling, seed, epoch cap) and its training-image scores."""
    patch, pool, seed, max_epochs = job
    os.environ.setdefault("MMDYN_SC_DATA_DIR", "/work/shared/data")
    sys.path.insert(0, str(HERE))
    from _harness import quiet_process

    quiet_process(1)
    from image_heatmaps import LABEL, QUARTER, deletion, grad_cam, ratios
    from images import image_mudata, load_bccd, nucleus_mask, stratified_split

    import mmdyn_sc

    full, _ = load_bccd(SIZE)
    images = pooled(full, pool)
    labels = images.obs[LABEL].astype(str).to_numpy()
    train_rows, _ = stratified_split(labels, seed)
    cap = {"max_epochs": max_epochs} if max_epochs else {}
    start = time.perf_counter()
    model = mmdyn_sc.tl.fit(image_mudata(images, train_rows), LABEL, seed=seed,
                            enable_progress_bar=False, attribution=False,
                            image_options={"patch_size": patch}, **cap)
    seconds = time.perf_counter() - start
    epochs = len(model.history["train_loss"])
    val_f1 = np.asarray(model.history["validation_f1_macro"], dtype=float).ravel()
    scored = image_mudata(images, train_rows)
    mmdyn_sc.tl.predict(scored, model, attribution=False)
    maps = {"gate": scored["image"].obsm["mmdyn_heatmap"], "Grad-CAM": grad_cam(model, scored)}
    masks = [nucleus_mask(im) for im in full.obsm["image"][train_rows]]
    grid_patch = SIZE // maps["gate"].shape[-1]
    curve = deletion(model, scored, maps, seed)
    record = {"patch": patch, "pool": pool, "seed": seed, "epochs": epochs, "seconds": seconds,
              "s_per_epoch": seconds / epochs, "val_f1_best": float(np.nanmax(val_f1)),
              "train_accuracy": curve["random"][0],
              "ratio": {k: float(np.nanmean(ratios(v, masks, grid_patch)))
                        for k, v in maps.items()},
              "drop": {k: curve[k][0] - curve[k][QUARTER] for k in ("gate", "Grad-CAM",
                                                                    "random")}}
    print(json.dumps(record), file=sys.stderr, flush=True)
    return record


def table(records: list[dict]) -> str:
    """Per patch size and pooling: means over seeds (gate ratio also its minimum)."""
    lines = ["| patch | pool | seeds | gate ratio (min) | Grad-CAM ratio | drop: gate | Grad-CAM "
             "| random | best validation F1 | s / epoch (median) |", "|---|" + "---|" * 9]
    for patch, pool in sorted({(r["patch"], r.get("pool", 1)) for r in records}):
        rs = [r for r in records if (r["patch"], r.get("pool", 1)) == (patch, pool)]
        gate = [r["ratio"]["gate"] for r in rs]
        lines.append(
            f"| {patch} | {pool} | {len(rs)} | {np.mean(gate):.2f} ({min(gate):.2f}) | "
            f"{np.mean([r['ratio']['Grad-CAM'] for r in rs]):.2f} | "
            + " | ".join(f"{np.mean([r['drop'][k] for r in rs]):.3f}"
                         for k in ("gate", "Grad-CAM", "random"))
            + f" | {np.mean([r['val_f1_best'] for r in rs]):.3f} | "
            f"{np.median([r['s_per_epoch'] for r in rs]):.2f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--patches", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--pools", type=int, nargs="+", default=[1])
    parser.add_argument("--max-epochs", type=int, default=30, help="0: the recipe's limit")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    jobs = [(p, f, s, args.max_epochs) for s in range(args.seeds) for p in args.patches
            for f in args.pools]
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(min(args.workers, len(jobs))) as pool:
        records = pool.map(run_job, jobs, chunksize=1)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in records))
    print(table(records))
    print(f"\nwall {(time.perf_counter() - start) / 60:.1f} min; command: python "
          f"benchmarks/image_patch_size.py {' '.join(sys.argv[1:])}")


if __name__ == "__main__":
    main()
