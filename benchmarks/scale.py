"""Scale benchmark: MMDynamics training speed and memory on 10k-1M resampled PBMC cells.

Data (built once per size under ``--workdir``, default ``/tmp/mmdyn_scale``, never inside the
repository, and reused while its settings are unchanged):

- ``mmdyn_sc.datasets.pbmc10k_cite()``, label ``cell_type`` restricted to the classes with
  >= 10 cells (6,816 cells, 5 classes). 20 % of these original cells, stratified by class
  (``random_state=0``), are held out *before* anything is resampled; accuracy at every scale
  is the macro F1 on these held-out original cells (``heldout.h5mu``).
- Genes: the top-4000 highly variable genes of the training cells (scanpy, flavour "seurat",
  on log-normalised training counts); the file has exactly 4000 genes (the totalVI authors'
  HVG selection), so all of them are kept. All 14 proteins.
- Synthetic cells: **raw counts are resampled, then prepared**. Each synthetic cell copies
  a training cell drawn uniformly with replacement (so the class proportions are kept) and
  replaces each of its nonzero counts ``c`` by ``Poisson(c * s)``, with one log-normal depth
  factor ``s`` (sigma 0.3) per cell and modality. No new nonzeros appear (the data stay as
  sparse as the source, a bit sparser where a count is resampled to 0). The counts are then
  normalised by ``mmdyn_sc.pp.prepare`` (per-cell total-count normalisation + log1p for
  RNA, per-cell CLR for protein) and written as ``cells_<n>.h5mu`` with ``.X`` = the prepared
  values, float32 CSR, for both modalities. Where TOTALVI runs, the raw counts go to
  ``cells_<n>_counts.h5mu`` (``.X`` = counts: RNA CSR, protein dense as TOTALVI requires),
  so that the MMDynamics fit reads no layer it does not use.

Fits: every fit runs in its own process (this script with ``--child``), which reads the
``.h5mu`` with ``mudata.read_h5mu`` and runs
``MMDynamics.setup_mudata(mdata, labels_key="cell_type", modalities=["rna", "prot"])``,
``MMDynamics(mdata, gate_rank=r, **model options of tl.fit's "default" recipe)`` (hidden 256,
dropout 0.5, standard feature scaling, balanced class weights, energy confidence, modality
dropout 0.3 on 2026-12-01) and
``model.train(max_epochs=E, batch_size=128, early_stopping=False, train_size=1.0)`` with
a Lightning callback timing each training epoch. Reported per fit:

- cells/s of a training epoch (median over epochs; every synthetic cell is a training cell);
- FLOPs per cell of one training step (forward, loss and backward; matrix products as
  counted by ``torch.utils.flop_counter.FlopCounterMode`` on one minibatch of 128 cells,
  divided by 128; the optimizer update is not counted);
- the float32 ``torch.mm`` throughput of the machine at the model's largest linear layer
  (``128 x d_in @ d_in x d_out``), measured in the same process just before training, with
  the same torch thread count, and again just after training (the bound is their mean);
  achieved fraction = FLOPs/cell x cells/s / that throughput;
- peak RSS of the process (``VmHWM``; ``ru_maxrss`` would include the parent's RSS at fork
  time) against the in-memory CSR size of the data it trains on (``.X`` of both
  modalities: data + indices + indptr), and the peak within each phase (load, setup,
  model, train, predict);
- macro F1 on the held-out original cells (``model.predict``).

Peer: scvi-tools ``TOTALVI`` on the raw counts of the same ``--totalvi-size`` cells
(defaults; ``train(max_epochs=..., train_size=1.0, early_stopping=False,
reduce_lr_on_plateau=False)``), seconds per epoch timed by the same callback.

Targets (reported as PASS/MISS, not asserted): one epoch on 1M cells with the low-rank gate
<= 5 min; peak RSS <= 2 x in-memory CSR size + 2 GB; achieved >= 50 % of the matmul bound.

Usage::

    nice -n 10 python benchmarks/scale.py --quick          # 10k cells, 1 epoch, nothing kept
    nice -n 10 python benchmarks/scale.py                  # 10k, 100k, 1M cells
    python benchmarks/scale.py --sizes 10000 100000 --ranks full 64 --epochs 2 --skip-totalvi
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from _harness import limit_threads, quiet, score, timed

LABEL = "cell_type"
MODS = ("rna", "prot")
MIN_CELLS = 10
N_HVG = 4000
HOLDOUT = 0.2
DEPTH_SIGMA = 0.3
CHUNK = 100_000
SEED = 0
FLOP_BATCH = 128
TARGET_EPOCH_S = 300.0
TARGET_RSS_FACTOR, TARGET_RSS_EXTRA_GB = 2.0, 2.0
TARGET_FRACTION = 0.5
GB = 1e9
RESULTS_DIR = Path(__file__).resolve().parent / "results"
SCRIPT = Path(__file__).resolve()
DATA_VERSION = 2  # bump when the data recipe changes, so that cached files are rebuilt


# ---------------------------------------------------------------------------- helpers
def peak_rss_bytes() -> int:
    """High-water resident set size of this process since the last :func:`reset_peak_rss`.

    Read from ``VmHWM`` in ``/proc/self/status``. ``ru_maxrss`` is not used: on Linux it
    keeps the high-water mark of the process image replaced by ``exec``, i.e. the RSS of the
    parent at fork time (here the data builder, several GB at 1M cells), which would be
    reported as the child's peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak_rss() -> None:
    """Restart ``VmHWM`` from the current RSS (Linux ``clear_refs`` 5), for per-phase peaks."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


class PhasePeaks:
    """Peak RSS of each phase of a fit and over the whole process."""

    def __init__(self):
        self.phases: dict[str, int] = {}
        self.overall = peak_rss_bytes()
        reset_peak_rss()

    def end(self, phase: str) -> None:
        """Record the peak since the previous phase ended, and start the next phase."""
        self.phases[phase] = peak_rss_bytes()
        self.overall = max(self.overall, self.phases[phase])
        reset_peak_rss()


def csr_bytes(matrix) -> int:
    """Bytes held by a sparse matrix (data + indices + indptr) or a dense array."""
    if hasattr(matrix, "indptr"):
        return matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes
    return np.asarray(matrix).nbytes


def parse_rank(text: str) -> int | None:
    """``"full"``/``"none"`` -> ``None`` (the d x d gate), else an int rank."""
    return None if text.lower() in ("full", "none") else int(text)


def rank_name(rank: int | None) -> str:
    return "full" if rank is None else f"rank {rank}"


class Logger:
    """Progress lines with elapsed time, to stdout and to ``<workdir>/scale.log``."""

    def __init__(self, path: Path):
        self.path = path
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        line = f"[{time.perf_counter() - self.t0:7.0f}s] {msg}"
        print(line, flush=True)
        with self.path.open("a") as handle:
            handle.write(line + "\n")


# ---------------------------------------------------------------------------- data
def load_source():
    """Raw counts, labels and names of the pbmc10k cells of classes with >= MIN_CELLS cells."""
    os.environ.setdefault("MMDYN_SC_DATA_DIR", "/work/shared/data")
    import mmdyn_sc

    mdata = mmdyn_sc.datasets.pbmc10k_cite()
    labels = mdata.obs[LABEL].astype(str)
    counts = labels.value_counts()
    keep = labels.isin(counts.index[counts >= MIN_CELLS]).to_numpy()
    cells = mdata.obs_names[keep]
    source = {m: mdata.mod[m][cells] for m in MODS}
    return {
        "x": {m: source[m].X.tocsr().astype(np.float32) for m in MODS},
        "labels": labels.to_numpy()[keep],
        "var_names": {m: source[m].var_names.copy() for m in MODS},
        "obs_names": cells.copy(),
    }


def holdout_split(labels: np.ndarray):
    """Training and held-out positions: HOLDOUT of each class, before any resampling."""
    from sklearn.model_selection import train_test_split

    positions = np.arange(len(labels))
    train, test = train_test_split(positions, test_size=HOLDOUT, stratify=labels,
                                   random_state=SEED)
    return np.sort(train), np.sort(test)


def select_genes(rna_counts, gene_names, n_top: int = N_HVG) -> np.ndarray:
    """Column positions of the ``n_top`` most variable genes of the given (training) cells."""
    if n_top >= rna_counts.shape[1]:
        return np.arange(rna_counts.shape[1])  # all genes (pbmc10k ships 4000 HVGs)
    import anndata as ad
    import scanpy as sc

    tmp = ad.AnnData(X=rna_counts.copy())
    tmp.var_names = gene_names
    sc.pp.normalize_total(tmp, target_sum=1e4)
    sc.pp.log1p(tmp)
    sc.pp.highly_variable_genes(tmp, n_top_genes=n_top, flavor="seurat")
    return np.flatnonzero(tmp.var["highly_variable"].to_numpy())


def resample_counts(x, rows: np.ndarray, rng: np.random.Generator):
    """Rows of ``x`` (CSR counts) with every nonzero c replaced by Poisson(c * depth)."""
    block = x[rows]
    depth = rng.lognormal(0.0, DEPTH_SIGMA, size=len(rows))
    lam = block.data.astype(np.float64) * np.repeat(depth, np.diff(block.indptr))
    block.data = rng.poisson(lam).astype(np.float32)
    block.eliminate_zeros()
    return block


def synthetic_counts(source, train_pos, genes, n_cells: int, seed: int):
    """Counts per modality and labels of ``n_cells`` resampled training cells (in chunks)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    picks = rng.choice(train_pos, size=n_cells, replace=True)
    xs = {"rna": source["x"]["rna"][:, genes], "prot": source["x"]["prot"]}
    blocks = {m: [] for m in MODS}
    for start in range(0, n_cells, CHUNK):
        rows = picks[start:start + CHUNK]
        for m in MODS:
            blocks[m].append(resample_counts(xs[m], rows, rng))
    counts = {}
    for m in MODS:
        counts[m] = sp.vstack(blocks[m], format="csr") if len(blocks[m]) > 1 else blocks[m][0]
        blocks[m].clear()
    return counts, source["labels"][picks]


def build_mudata(counts, labels, obs_names, var_names):
    """MuData with ``.X`` = the given counts (float32 CSR) and ``obs[LABEL]``."""
    import anndata as ad
    import mudata as md
    import pandas as pd

    mods = {}
    for m in MODS:
        mods[m] = ad.AnnData(X=counts[m], obs=pd.DataFrame(index=obs_names),
                             var=pd.DataFrame(index=var_names[m]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few protein names equal gene symbols
        mdata = md.MuData(mods)
    mdata.obs[LABEL] = pd.Categorical(labels)
    return mdata


def prepared_copy(mdata):
    """``mdata`` with ``.X`` replaced by ``mmdyn_sc.pp.prepare``'s layer, in place."""
    import mmdyn_sc

    mmdyn_sc.pp.prepare(mdata)
    for m in MODS:
        adata = mdata.mod[m]
        prepared = adata.layers.pop("mmdyn_prepared")
        if not hasattr(prepared, "indptr"):  # CLR comes back dense: store CSR like the RNA
            import scipy.sparse as sp

            prepared = sp.csr_matrix(prepared)
        adata.X = prepared.astype(np.float32, copy=False)
    return mdata


def write_h5mu(mdata, path: Path) -> None:
    import mudata as md

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        md.write_h5mu(str(path), mdata)


def data_settings(n_cells: int) -> dict:
    return {"version": DATA_VERSION, "n_cells": n_cells, "seed": SEED, "holdout": HOLDOUT,
            "depth_sigma": DEPTH_SIGMA, "n_hvg": N_HVG, "label": LABEL,
            "min_cells": MIN_CELLS}


def cached(path: Path, settings: dict) -> bool:
    """Whether ``path`` exists and was built with ``settings`` (``<path>.json``)."""
    meta = path.with_suffix(".json")
    return path.exists() and meta.exists() and json.loads(meta.read_text()) == settings


def mark_built(path: Path, settings: dict) -> None:
    path.with_suffix(".json").write_text(json.dumps(settings))


class DataBuilder:
    """Builds (or reuses) the held-out file and the synthetic files under ``workdir``."""

    def __init__(self, workdir: Path, log: Logger):
        self.workdir = workdir
        self.log = log
        self._source = None

    def source(self):
        """The pbmc10k source, its training/held-out split and the selected genes (lazy)."""
        if self._source is None:
            source = load_source()
            train_pos, test_pos = holdout_split(source["labels"])
            genes = select_genes(source["x"]["rna"][train_pos], source["var_names"]["rna"])
            self._source = (source, train_pos, test_pos, genes)
        return self._source

    def heldout(self) -> Path:
        """``heldout.h5mu``: the held-out original cells, prepared."""
        path = self.workdir / "heldout.h5mu"
        settings = data_settings(0)
        if cached(path, settings):
            return path
        source, _, test_pos, genes = self.source()
        counts = {"rna": source["x"]["rna"][test_pos][:, genes],
                  "prot": source["x"]["prot"][test_pos]}
        var_names = {"rna": source["var_names"]["rna"][genes],
                     "prot": source["var_names"]["prot"]}
        mdata = build_mudata(counts, source["labels"][test_pos],
                             source["obs_names"][test_pos], var_names)
        write_h5mu(prepared_copy(mdata), path)
        mark_built(path, settings)
        self.log(f"held-out cells: {len(test_pos)} (of {len(source['labels'])}), "
                 f"{len(genes)} genes -> {path}")
        return path

    def synthetic(self, n_cells: int, with_counts: bool) -> tuple[Path, Path | None, float]:
        """``cells_<n>.h5mu`` (prepared) and, if asked, ``cells_<n>_counts.h5mu``."""
        path = self.workdir / f"cells_{n_cells}.h5mu"
        counts_path = self.workdir / f"cells_{n_cells}_counts.h5mu"
        settings = data_settings(n_cells)
        if cached(path, settings) and (not with_counts or cached(counts_path, settings)):
            return path, counts_path if with_counts else None, 0.0
        start = time.perf_counter()
        source, train_pos, _, genes = self.source()
        counts, labels = synthetic_counts(source, train_pos, genes, n_cells, SEED + n_cells)
        import pandas as pd

        obs_names = pd.Index([f"syn{i:07d}" for i in range(n_cells)])
        var_names = {"rna": source["var_names"]["rna"][genes],
                     "prot": source["var_names"]["prot"]}
        nnz = {m: counts[m].nnz / n_cells for m in MODS}
        mdata = build_mudata(counts, labels, obs_names, var_names)
        del counts
        if with_counts:  # TOTALVI wants dense protein counts (14 columns: small)
            mdata.mod["prot"].X = mdata.mod["prot"].X.toarray()
            write_h5mu(mdata, counts_path)
            mark_built(counts_path, settings)
        write_h5mu(prepared_copy(mdata), path)
        mark_built(path, settings)
        del mdata
        seconds = time.perf_counter() - start
        self.log(f"built {n_cells} cells ({seconds:.0f}s; nonzeros/cell rna {nnz['rna']:.0f}, "
                 f"prot {nnz['prot']:.1f}) -> {path}")
        return path, counts_path if with_counts else None, seconds


# ---------------------------------------------------------------------------- child: timing
def epoch_timer():
    """A Lightning callback recording the wall time of every training epoch."""
    from lightning.pytorch.callbacks import Callback

    class EpochTimer(Callback):
        def __init__(self):
            self.seconds: list[float] = []
            self._start = None

        def on_train_epoch_start(self, trainer, pl_module):
            self._start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            self.seconds.append(time.perf_counter() - self._start)

    return EpochTimer()


def read_mudata(path: Path):
    import mudata as md

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return md.read_h5mu(str(path))


def data_bytes(mdata) -> int:
    return int(sum(csr_bytes(mdata.mod[m].X) for m in MODS))


# ---------------------------------------------------------------------------- child: MMDynamics
def one_batch(model, n_cells: int):
    """The first ``n_cells`` training cells as the model's loader gives them."""
    from mmdyn_sc.model._registry_keys import unpack_batch

    loader = model._make_data_loader(adata=model.adata, indices=np.arange(n_cells),
                                     batch_size=n_cells, shuffle=False)
    return unpack_batch(next(iter(loader)), len(model.modalities_))


def flops_per_cell(module, batch) -> dict:
    """Matmul FLOPs per cell of one training step (forward + loss + backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    xs, present, labels = batch
    module.train()
    with FlopCounterMode(display=False) as forward_counter:
        outputs = module(xs, present)
        loss, _ = module.loss(outputs, labels, present)
    with FlopCounterMode(display=False) as backward_counter:
        loss.backward()
    module.zero_grad(set_to_none=True)
    n = labels.shape[0]
    forward = forward_counter.get_total_flops() / n
    return {"forward": forward, "step": forward + backward_counter.get_total_flops() / n}


def largest_linear(module) -> tuple[int, int]:
    """(in, out) features of the module's largest ``nn.Linear``."""
    from torch import nn

    layers = [m for m in module.modules() if isinstance(m, nn.Linear)]
    biggest = max(layers, key=lambda m: m.in_features * m.out_features)
    return biggest.in_features, biggest.out_features


def matmul_gflops(n_rows: int, n_in: int, n_out: int, seconds: float = 2.0) -> float:
    """float32 ``torch.mm`` throughput for (n_rows x n_in) @ (n_in x n_out), GFLOP/s."""
    import torch

    a, b = torch.randn(n_rows, n_in), torch.randn(n_in, n_out)
    for _ in range(3):
        torch.mm(a, b)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        reps += 1
    return 2.0 * n_rows * n_in * n_out * reps / (time.perf_counter() - start) / 1e9


def macro_f1(model, heldout_path: Path) -> float:
    """Macro F1 on the held-out cells (the benchmarks' one metric code)."""
    heldout = read_mudata(heldout_path)
    predicted = model.predict(heldout).astype(str).to_numpy()
    return score(heldout.obs[LABEL].astype(str).to_numpy(), predicted)["f1_macro"]


def recipe_model_options(recipe: dict) -> dict:
    """The options of ``recipe`` that build the model (``tl.fit``'s own list), except
    ``gate_rank``, which each fit sets."""
    from mmdyn_sc.tl._recipes import MODEL_OPTIONS

    return {k: recipe[k] for k in MODEL_OPTIONS if k != "gate_rank"}


def child_mmdyn(args) -> dict:
    """One MMDynamics fit; returns the row for the table."""
    from mmdyn_sc import MMDynamics
    from mmdyn_sc.model._recipes import resolve_batch_size
    from mmdyn_sc.tl import RECIPES

    recipe = RECIPES["default"]
    rss, start = PhasePeaks(), time.perf_counter()
    mdata = read_mudata(args.data)
    load_s = time.perf_counter() - start
    n_cells, data_size = mdata.n_obs, data_bytes(mdata)
    rss.end("load")
    MMDynamics.setup_mudata(mdata, labels_key=LABEL, modalities=list(MODS))
    rss.end("setup")
    options = recipe_model_options(recipe)
    model = MMDynamics(mdata, gate_rank=args.gate_rank, **options)
    batch_size = resolve_batch_size(recipe["batch_size"], has_images=False)
    flops = flops_per_cell(model.module, one_batch(model, FLOP_BATCH))
    n_in, n_out = largest_linear(model.module)
    bound_before = matmul_gflops(batch_size, n_in, n_out)
    rss.end("model")
    timer = epoch_timer()
    _, train_s = timed(model.train, max_epochs=args.epochs, batch_size=batch_size,
                       lr=recipe["lr"], weight_decay=recipe["weight_decay"],
                       early_stopping=False, train_size=1.0, enable_progress_bar=False,
                       callbacks=[timer])
    # The machine's speed drifts (shared cores, clocks): the bound is the mean of a
    # measurement just before and just after training.
    bound_after = matmul_gflops(batch_size, n_in, n_out)
    bound = (bound_before + bound_after) / 2
    rss.end("train")
    f1 = macro_f1(model, args.heldout)
    rss.end("predict")
    epoch_s = statistics.median(timer.seconds)
    cells_per_s = len(model.train_indices) / epoch_s
    return {
        "model": "MMDynamics", "gate": rank_name(args.gate_rank), "cells": n_cells,
        "epochs": args.epochs, "epoch_seconds": timer.seconds, "epoch_s": epoch_s,
        "cells_per_s": cells_per_s, "train_s": train_s, "load_s": load_s,
        "flops_per_cell": flops["step"], "forward_flops_per_cell": flops["forward"],
        "mm_shape": [batch_size, n_in, n_out], "mm_gflops": bound,
        "mm_gflops_before_after": [bound_before, bound_after],
        "fraction": flops["step"] * cells_per_s / (bound * 1e9),
        "csr_bytes": data_size, "peak_rss_bytes": rss.overall, "rss_by_phase": rss.phases,
        "macro_f1": f1, "batch_size": batch_size, "hidden": options["n_hidden"],
        "threads": args.threads,
    }


# ---------------------------------------------------------------------------- child: TOTALVI
def child_totalvi(args) -> dict:
    """One scvi-tools TOTALVI fit on the raw counts; returns the row for the table."""
    import scvi

    rss, start = PhasePeaks(), time.perf_counter()
    mdata = read_mudata(args.data)
    load_s = time.perf_counter() - start
    n_cells, data_size = mdata.n_obs, data_bytes(mdata)
    rss.end("load")
    scvi.model.TOTALVI.setup_mudata(mdata, rna_layer=None, protein_layer=None,
                                    modalities={"rna_layer": "rna", "protein_layer": "prot"})
    model = scvi.model.TOTALVI(mdata)
    rss.end("model")
    timer = epoch_timer()
    train_start = time.perf_counter()
    model.train(max_epochs=args.epochs, train_size=1.0, early_stopping=False,
                reduce_lr_on_plateau=False, enable_progress_bar=False, callbacks=[timer])
    rss.end("train")
    epoch_s = statistics.median(timer.seconds)
    return {
        "model": "TOTALVI (scvi-tools)", "gate": "-", "cells": n_cells, "epochs": args.epochs,
        "epoch_seconds": timer.seconds, "epoch_s": epoch_s, "cells_per_s": n_cells / epoch_s,
        "train_s": time.perf_counter() - train_start, "load_s": load_s,
        "csr_bytes": data_size, "peak_rss_bytes": rss.overall, "rss_by_phase": rss.phases,
        "batch_size": 256, "threads": args.threads,
    }


def child_main(args) -> None:
    limit_threads(args.threads)
    quiet()
    row = child_mmdyn(args) if args.child == "mmdyn" else child_totalvi(args)
    args.result.write_text(json.dumps(row))


# ---------------------------------------------------------------------------- parent
def run_child(kind: str, data: Path, args, log: Logger, **extra) -> dict:
    """Run one fit in a fresh process; a failed child gives a row with its status."""
    result = args.workdir / f"result_{kind}_{data.stem}_{extra.get('gate_rank', '')}.json"
    result.unlink(missing_ok=True)
    command = [sys.executable, str(SCRIPT), "--child", kind, "--data", str(data),
               "--heldout", str(args.workdir / "heldout.h5mu"), "--result", str(result),
               "--threads", str(args.threads), "--epochs", str(extra["epochs"])]
    if extra.get("gate_rank") is not None:
        command += ["--gate-rank", str(extra["gate_rank"])]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
           "MKL_NUM_THREADS": str(args.threads), "OPENBLAS_NUM_THREADS": str(args.threads)}
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=args.workdir, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0 or not result.exists():
        tail = (proc.stderr or proc.stdout)[-3000:]
        log(f"child {kind} {data.name} failed (rc={proc.returncode}):\n{tail}")
        return {"model": "MMDynamics" if kind == "mmdyn" else "TOTALVI (scvi-tools)",
                "gate": rank_name(extra.get("gate_rank")) if kind == "mmdyn" else "-",
                "status": f"failed (rc={proc.returncode})", "wall_s": wall,
                "epochs": extra["epochs"]}
    row = {**json.loads(result.read_text()), "status": "ok", "wall_s": wall}
    return row


def describe(row: dict) -> str:
    if row.get("status") != "ok":
        return f"{row['model']} {row['gate']}: {row.get('status')}"
    text = (f"{row['model']} {row['gate']} on {row['cells']} cells: "
            f"{row['epoch_s']:.1f} s/epoch ({row['cells_per_s']:.0f} cells/s), "
            f"peak RSS {row['peak_rss_bytes'] / GB:.2f} GB (CSR {row['csr_bytes'] / GB:.2f} GB)")
    if "fraction" in row:
        text += (f", {row['flops_per_cell'] / 1e6:.1f} MFLOP/cell, "
                 f"{100 * row['fraction']:.0f} % of {row['mm_gflops']:.0f} GFLOP/s, "
                 f"held-out macro F1 {row['macro_f1']:.3f}")
    return text + f" [{row['wall_s']:.0f}s process]"


def epochs_for(n_cells: int, args) -> int:
    return args.epochs if n_cells <= args.large_cells else args.epochs_large


def run_all(args, log: Logger) -> tuple[list[dict], dict]:
    """Build the data and run every fit; returns the rows and data-build seconds per size."""
    builder = DataBuilder(args.workdir, log)
    builder.heldout()
    rows, build_s = [], {}
    for n_cells in args.sizes:
        totalvi_here = not args.skip_totalvi and n_cells == args.totalvi_size
        path, counts_path, build_s[n_cells] = builder.synthetic(n_cells, totalvi_here)
        epochs = epochs_for(n_cells, args)
        for rank in args.ranks:
            if rank is None and n_cells > args.full_max_cells:
                rows.append({"model": "MMDynamics", "gate": "full", "cells": n_cells,
                             "epochs": 0, "status": "skipped"})
                log(f"MMDynamics full gate on {n_cells} cells: skipped "
                    f"(> --full-max-cells {args.full_max_cells})")
                continue
            row = run_child("mmdyn", path, args, log, gate_rank=rank, epochs=epochs)
            rows.append({**row, "cells": n_cells})
            log(describe(rows[-1]))
        if totalvi_here:
            row = run_child("totalvi", counts_path, args, log, epochs=args.totalvi_epochs)
            rows.append({**row, "cells": n_cells})
            log(describe(rows[-1]))
    return rows, build_s


# ---------------------------------------------------------------------------- report
def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def rss_target(row: dict) -> float:
    return TARGET_RSS_FACTOR * row["csr_bytes"] + TARGET_RSS_EXTRA_GB * GB


def full_gate_estimate(rows: list[dict], n_cells: int) -> str:
    """Epoch time of a skipped full-gate fit, extrapolated from the largest measured one."""
    done = [r for r in rows if r.get("status") == "ok" and r["gate"] == "full"]
    if not done:
        return "skipped"
    ref = max(done, key=lambda r: r["cells"])
    return (f"skipped (at {ref['cells_per_s']:.0f} cells/s, as on {ref['cells']:,} cells: "
            f"~{n_cells / ref['cells_per_s']:.0f} s/epoch)")


def table_row(row: dict, rows: list[dict]) -> str:
    head = f"| {row['cells']:,} | {row['model']} | {row['gate']} |"
    if row.get("status") == "skipped":
        return head + f" {full_gate_estimate(rows, row['cells'])} |" + " |" * 10
    if row.get("status") != "ok":
        return head + f" {row.get('status')} |" + " |" * 10
    epochs = ", ".join(f"{s:.1f}" for s in row["epoch_seconds"])
    rss, target = row["peak_rss_bytes"], rss_target(row)
    if "fraction" in row:
        flops = f"{row['flops_per_cell'] / 1e6:.1f}"
        n, k, m = row["mm_shape"]
        bound = f"{row['mm_gflops']:.0f} ({n}x{k} @ {k}x{m})"
        frac = (f"{100 * row['fraction']:.0f} % "
                f"({verdict(row['fraction'] >= TARGET_FRACTION)})")
        f1 = f"{row['macro_f1']:.3f}"
    else:
        flops = bound = frac = f1 = "-"
    return (head + f" {row['epochs']} ({epochs}) | {row['epoch_s']:.1f} | "
            f"{row['cells_per_s']:,.0f} | {flops} | {bound} | {frac} | "
            f"{row['csr_bytes'] / GB:.2f} | {rss / GB:.2f} | {target / GB:.2f} "
            f"({verdict(rss <= target)}) | {f1} | {row['wall_s']:.0f} |")


def target_lines(rows: list[dict]) -> list[str]:
    ok = [r for r in rows if r.get("status") == "ok"]
    big_low = [r for r in ok if r["model"] == "MMDynamics" and r["gate"] != "full"
               and r["cells"] >= 1_000_000]
    lines = ["Targets (benchmark, not test):", ""]
    if big_low:
        r = max(big_low, key=lambda r: r["cells"])
        lines.append(f"- 1M cells, one epoch, low-rank gate ({r['gate']}) <= "
                     f"{TARGET_EPOCH_S:.0f} s: {r['epoch_s']:.0f} s on {r['cells']:,} cells "
                     f"→ **{verdict(r['epoch_s'] <= TARGET_EPOCH_S)}**")
    else:
        lines.append("- 1M cells, one epoch, low-rank gate <= 5 min: not run")
    mm = [r for r in ok if r["model"] == "MMDynamics"]
    rss_ok = [r for r in ok if r["peak_rss_bytes"] <= rss_target(r)]
    lines.append(f"- peak RSS <= {TARGET_RSS_FACTOR:g} x CSR + {TARGET_RSS_EXTRA_GB:g} GB: "
                 f"{len(rss_ok)} of {len(ok)} fits → **{verdict(len(rss_ok) == len(ok))}**")
    frac_ok = [r for r in mm if r["fraction"] >= TARGET_FRACTION]
    lines.append(f"- throughput >= {100 * TARGET_FRACTION:.0f} % of the matmul bound: "
                 f"{len(frac_ok)} of {len(mm)} MMDynamics fits → "
                 f"**{verdict(len(frac_ok) == len(mm))}**")
    return lines


def rss_phase_table(rows: list[dict]) -> list[str]:
    """Peak RSS within each phase of every fit (GB)."""
    phases = ("load", "setup", "model", "train", "predict")
    lines = ["Peak RSS (GB) within each phase of the fit's process (VmHWM, reset between "
             "phases): load = imports + `read_h5mu`; setup = `setup_mudata`; model = "
             "`MMDynamics(...)` + FLOP count + matmul bound; train = `model.train` (feature "
             "scaling, loader, epochs); predict = reading and predicting the held-out cells.",
             "",
             "| cells | model | gate | CSR | " + " | ".join(phases) + " |",
             "|---|---|---|---|" + "---|" * len(phases)]
    for r in rows:
        if r.get("status") != "ok":
            continue
        values = [r["rss_by_phase"].get(p) for p in phases]
        cells = " | ".join("-" if v is None else f"{v / GB:.2f}" for v in values)
        lines.append(f"| {r['cells']:,} | {r['model']} | {r['gate']} | "
                     f"{r['csr_bytes'] / GB:.2f} | {cells} |")
    return lines


def report(rows: list[dict], meta: dict) -> str:
    lines = [
        "| cells | model | gate | epochs (s each) | s/epoch (median) | cells/s | "
        "MFLOP/cell (train step) | mm bound GFLOP/s (shape) | achieved / bound | "
        "CSR GB | peak RSS GB | RSS target GB | held-out macro F1 | process s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [table_row(r, rows) for r in rows]
    lines += ["", *target_lines(rows), "", *rss_phase_table(rows), ""]
    lines += [f"- {note}" for note in meta["notes"]]
    return "\n".join(lines) + "\n"


def notes(args, build_s: dict, wall: float) -> list[str]:
    from mmdyn_sc.model._recipes import resolve_batch_size
    from mmdyn_sc.tl import RECIPES

    out = [
        f"Data: pbmc10k_cite `{LABEL}` (classes >= {MIN_CELLS} cells), {100 * HOLDOUT:.0f} % "
        "of the original cells held out (stratified) before resampling; synthetic cells = "
        "training cells resampled with replacement, nonzero counts Poisson-resampled with a "
        f"log-normal (sigma {DEPTH_SIGMA}) depth factor per cell, then `pp.prepare`; "
        "float32 CSR in `.h5mu` under the workdir. All 4000 genes are the top-4000 HVGs.",
        "MMDynamics: tl.fit's \"default\" recipe model options ("
        + ", ".join(f"{k} {v}" for k, v in recipe_model_options(RECIPES["default"]).items())
        + f"), batch {resolve_batch_size(RECIPES['default']['batch_size'], False)}, "
        "`train_size=1.0`, no "
        "early stopping; cells/s = training cells / median epoch time (epoch timed by a "
        "Lightning callback: loading, forward, backward, optimizer; nothing else).",
        "FLOPs: matrix products of one training step (forward, loss, backward) counted by "
        "FlopCounterMode on 128 cells; the Adam update (elementwise) is not counted. "
        "The mm bound is torch.mm at the model's largest linear layer, in the same process: "
        "the mean of 2 s of products just before and 2 s just after training (both in the "
        "JSON).",
        "Peak RSS: high-water RSS (VmHWM) of the fit's own process over all its phases "
        "(imports, reading the file, setup, training, prediction on the held-out cells); "
        "`ru_maxrss` is not used because after fork+exec Linux carries over the parent's "
        "RSS into it. CSR = `.X` of both modalities in memory.",
        f"Machine: {os.cpu_count()} CPU(s) shared with other work (expect noise); "
        f"{args.threads} torch/BLAS thread(s); python {platform.python_version()}.",
        "Data build time (s, 0 = reused from the workdir): "
        + ", ".join(f"{n:,}: {s:.0f}" for n, s in build_s.items()) + ".",
        f"Total wall time {wall / 60:.1f} min. Command: `{command_line()}`",
    ]
    if args.quick:
        out.insert(0, "QUICK SMOKE TEST (10k cells, 1 epoch): not a result.")
    return out


def command_line() -> str:
    return "python benchmarks/scale.py " + " ".join(sys.argv[1:])


def write_results(rows: list[dict], meta: dict, out_md: Path) -> str:
    text = report(rows, meta)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text("# Scale: MMDynamics on resampled PBMC 10k CITE-seq\n\n" + text)
    out_md.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=1, default=float) + "\n")
    return text


# ---------------------------------------------------------------------------- main
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--ranks", type=parse_rank, nargs="+", default=[None, 64],
                        help="gate ranks: 'full' (d x d gate) and/or integers (default full 64)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per fit")
    parser.add_argument("--epochs-large", type=int, default=1,
                        help="epochs per fit above --large-cells cells")
    parser.add_argument("--large-cells", type=int, default=100_000)
    parser.add_argument("--full-max-cells", type=int, default=100_000,
                        help="skip the full gate above this many cells (too slow on a CPU)")
    parser.add_argument("--skip-totalvi", action="store_true")
    parser.add_argument("--totalvi-size", type=int, default=100_000)
    parser.add_argument("--totalvi-epochs", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/mmdyn_scale"))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and BLAS threads per fit (1 on a shared 2-core machine)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 10k cells, 1 epoch; results stay in the workdir")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "scale.md")
    parser.add_argument("--child", choices=("mmdyn", "totalvi"), help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--heldout", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--gate-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.epochs, args.totalvi_epochs = [10_000], 1, 1
        args.totalvi_size = 10_000
        args.out = args.workdir / "scale_quick.md"
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        child_main(args)
        return None
    repo = SCRIPT.parent.parent
    if args.workdir.resolve().is_relative_to(repo):
        raise SystemExit(f"--workdir must be outside the repository ({repo}).")
    args.workdir.mkdir(parents=True, exist_ok=True)
    log = Logger(args.workdir / "scale.log")
    log(f"start: {command_line()}")
    t0 = time.perf_counter()
    rows, build_s = run_all(args, log)
    wall = time.perf_counter() - t0
    meta = {"notes": notes(args, build_s, wall), "command": command_line(),
            "threads": args.threads, "wall_s": wall, "workdir": str(args.workdir)}
    text = write_results(rows, meta, args.out)
    print()
    print(text)
    log(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return rows


if __name__ == "__main__":
    main()
