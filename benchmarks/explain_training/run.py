"""Training changes vs gradient attributions (issue 18 follow-up). Scratch; measurement only.

BMMC, each donor as training set, rankings on the fit's training split, faithfulness on the
fit's validation cells (same donor). Never touches the other donor.

python benchmarks/explain_training/run.py --configs default,idrop0.2 --seeds 0,1,2
Appends one pickle per fit to $EXPLAIN_TRAINING_DIR/fits/ (default /tmp/inputdrop/fits/): <config>_<donor>_<seed>.pkl
"""
import argparse
import os
import pickle
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MMDYN_SC_DATA_DIR", str(Path(__file__).resolve().parents[3] / "shared" / "data"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
WORKDIR = Path(os.environ.get("EXPLAIN_TRAINING_DIR", "/tmp/inputdrop"))
import numpy as np  # noqa: E402

import explain as ex  # noqa: E402
from _harness import quiet_process  # noqa: E402

OUT = WORKDIR / "fits"
METHODS = ["gate", "gxi_logsoftmax", "ig_logsoftmax"]


def input_dropout(rate):
    """Callback: dropout (training mode only) on every tabular branch's SCALED input.

    A forward hook on ``branch.scaler``: its output (z-score; 0 = training mean) is passed
    through F.dropout (inverted: kept entries x 1/(1-rate)), so the gate and the encoder both
    see the dropped features at the training mean. Inactive in eval mode.
    """
    import torch.nn.functional as F
    from lightning.pytorch.callbacks import Callback

    def hook(scaler, args, out):
        return F.dropout(out, rate, scaler.training)

    class InputDropout(Callback):
        def on_fit_start(self, trainer, plan):
            for branch in plan.module.branches:
                branch.scaler.register_forward_hook(hook)

    return InputDropout()


def input_dropout_enc(rate):
    """pbmc10k_tune's variant: dropout on the encoder's input (gated scaled input)."""
    import torch.nn.functional as F
    from lightning.pytorch.callbacks import Callback

    def drop(encoder, args):
        return (F.dropout(args[0], rate, encoder.training),)

    class InputDropout(Callback):
        def on_fit_start(self, trainer, plan):
            for branch in plan.module.branches:
                branch.encoder.register_forward_pre_hook(drop)

    return InputDropout()


CONFIGS = {
    "default": {},
    "idrop0.2": {"_idrop": 0.2},
    "idrop0.5": {"_idrop": 0.5},
    "idrop0.8": {"_idrop": 0.8},
    "sparsity0": {"loss_weights": {"sparsity": 0.0}},
    "wd1e-3": {"weight_decay": 1e-3},
    "idrop0.2_enc": {"_idrop_enc": 0.2},
    "idrop0.5_enc": {"_idrop_enc": 0.5},
}


def config_options(name):
    """Name may be a '+'-joined combination of CONFIGS keys."""
    opts = {}
    for part in name.split("+"):
        for k, v in CONFIGS[part].items():
            if k == "loss_weights":
                opts.setdefault("loss_weights", {}).update(v)
            else:
                opts[k] = v
    cbs = []
    if "_idrop" in opts:
        cbs.append(input_dropout(opts.pop("_idrop")))
    if "_idrop_enc" in opts:
        cbs.append(input_dropout_enc(opts.pop("_idrop_enc")))
    if cbs:
        opts["callbacks"] = cbs
    return opts


def one(train, donor, seed, config, markers):
    import mmdyn_sc
    from sklearn.metrics import f1_score

    train = train.copy()
    t0 = time.perf_counter()
    model = mmdyn_sc.tl.fit(train, "cell_type", seed=seed, enable_progress_bar=False,
                            **config_options(config))
    fit_s = time.perf_counter() - t0
    net = ex.Net(model)
    classes = net.classes
    n_classes = len(classes)
    codes = {c: i for i, c in enumerate(classes)}
    y_all = np.array([codes.get(str(v), -1) for v in train.obs["cell_type"].astype(str)])
    tr, va = np.asarray(model.train_indices), np.asarray(model.validation_indices)
    y_tr = y_all[tr]
    rk, secs, n_cells, groups = ex.model_rankings([net], tr, METHODS, 500, seed)
    # Wilcoxon on the same training split (reference for P@5 and faithfulness)
    xs, _ = net.inputs(tr)
    prot_i = net.mods.index("prot")
    rk["wilcoxon"] = {"prot": ex.wilcoxon_scores(xs[prot_i].numpy().astype(np.float64), y_tr,
                                                 n_classes, net.features["prot"])}
    scored = [c for c in np.unique(y_tr) if classes[c] in markers]
    p5 = {}
    for name, r in rk.items():
        per = ex.precision(r["prot"], net.features["prot"], markers, classes, scored, 5)
        p5[name] = {"mean": float(np.mean([v[0] for v in per.values()])),
                    "per_class": {c: v[0] for c, v in per.items()}}
    # validation accuracy
    xv, pv = net.inputs(va)
    probs, _ = ex.forward(net.module, xv, pv)
    pred = probs.argmax(1)
    yv = y_all[va]
    f1 = float(f1_score(yv, pred, labels=sorted(set(yv)), average="macro", zero_division=0))
    acc = float((pred == yv).mean())
    eval_c = sorted(set(yv) - {-1})
    faith = ex.faithfulness(net, va, yv, {n: rk[n]["prot"] for n in rk}, prot_i, seed, eval_c)
    rec = {"config": config, "donor": donor, "seed": seed, "fit_seconds": fit_s,
           "epochs": len(model.history["train_loss"]), "n_train": int(len(tr)),
           "n_val": int(len(va)), "val_f1": f1, "val_acc": acc,
           "train_acc_pred": float((groups == y_tr).mean()), "p5": p5, "faith": faith,
           "attr_seconds": secs, "classes": classes,
           "rankings": {n: {"prot": r["prot"]} for n, r in rk.items()}}
    return rec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--donors", default="s1d1,s1d2")
    args = ap.parse_args()
    quiet_process(1)
    OUT.mkdir(parents=True, exist_ok=True)
    mdata = ex.load_bmmc()
    markers = ex.read_markers("bmmc_protein.csv")
    donors = args.donors.split(",")
    trains = {d: mdata[mdata.obs["batch"] == d].copy() for d in donors}
    del mdata
    for config in args.configs.split(","):
        for donor in donors:
            for seed in [int(s) for s in args.seeds.split(",")]:
                path = OUT / f"{config}_{donor}_{seed}.pkl"
                if path.exists():
                    continue
                t0 = time.perf_counter()
                rec = one(trains[donor], donor, seed, config, markers)
                rec["total_seconds"] = time.perf_counter() - t0
                path.write_bytes(pickle.dumps(rec))
                f = rec["faith"]
                aok = {n: np.mean([f[n][k][0] for k in ex.KS]) for n in f}
                print(f"{config} {donor} s{seed}: fit {rec['fit_seconds']:.1f}s ep "
                      f"{rec['epochs']} valF1 {rec['val_f1']:.3f} | P@5 "
                      + " ".join(f"{n} {v['mean']:.3f}" for n, v in rec["p5"].items())
                      + " | AOK " + " ".join(f"{n} {v:.3f}" for n, v in aok.items())
                      + f" | {rec['total_seconds']:.0f}s", flush=True)


if __name__ == "__main__":
    main()
