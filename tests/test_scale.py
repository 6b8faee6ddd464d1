"""Scale: the low-rank feature gate, distributed (DDP) training, sparse minibatches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import sparse

import mmdyn_sc as ms
from mmdyn_sc.model._training import is_ddp_strategy
from mmdyn_sc.module import FeatureGate, LowRankFeatureGate, MMDynamicsModule
from mmdyn_sc.tl import RECIPES


# ------------------------------------------------------------------ low-rank gate: module
def test_low_rank_gate_shape_range_and_size():
    gate = LowRankFeatureGate(50, 4)
    w = gate(torch.randn(7, 50))
    assert w.shape == (7, 50)
    assert ((w > 0) & (w < 1)).all()
    assert gate.rank == 4
    assert gate.down.bias is None and gate.up.bias is not None
    assert sum(p.numel() for p in gate.parameters()) == 50 * 4 + 4 * 50 + 50
    assert torch.all(gate.up.bias == 0)


def test_low_rank_gate_initialisation_is_xavier_normal():
    torch.manual_seed(0)
    gate = LowRankFeatureGate(400, 100)
    for layer in (gate.down, gate.up):
        fan_out, fan_in = layer.weight.shape
        expected = (2.0 / (fan_in + fan_out)) ** 0.5
        assert abs(layer.weight.std().item() / expected - 1) < 0.05


@pytest.mark.parametrize("rank", [0, 6, 10, -1])
def test_low_rank_gate_rejects_ranks_outside_1_to_d_minus_1(rank):
    with pytest.raises(ValueError, match="6 features"):
        LowRankFeatureGate(6, rank)


def test_default_module_keeps_the_full_gate_and_its_state_dict_keys():
    module = MMDynamicsModule([6, 4], [5, 3], n_classes=3)
    assert all(isinstance(b.gate, FeatureGate) for b in module.branches)
    gate_keys = sorted(k for k in module.state_dict() if ".gate." in k)
    assert gate_keys == ["branches.0.gate.linear.bias", "branches.0.gate.linear.weight",
                         "branches.1.gate.linear.bias", "branches.1.gate.linear.weight"]


def test_module_gate_rank_per_modality_trains():
    torch.manual_seed(0)
    module = MMDynamicsModule([60, 4], [5, 3], n_classes=3, gate_rank=[8, None])
    assert isinstance(module.branches[0].gate, LowRankFeatureGate)
    assert isinstance(module.branches[1].gate, FeatureGate)
    xs = [torch.randn(12, 60), torch.randn(12, 4)]
    out = module(xs, torch.ones(12, 2))
    assert out["gates"][0].shape == (12, 60)
    loss, parts = module.loss(out, torch.randint(0, 3, (12,)), torch.ones(12, 2))
    loss.backward()
    assert parts["sparsity"] > 0
    gate = module.branches[0].gate
    assert gate.down.weight.grad.abs().sum() > 0 and gate.up.weight.grad.abs().sum() > 0


def test_module_gate_rank_int_applies_to_all_and_is_ignored_without_fi():
    module = MMDynamicsModule([60, 40], [5, 3], n_classes=3, gate_rank=8)
    assert all(isinstance(b.gate, LowRankFeatureGate) for b in module.branches)
    static = MMDynamicsModule([60, 40], [5, 3], n_classes=3, gate_rank=8,
                              feature_informativeness=False)
    assert all(b.gate is None for b in static.branches)
    with pytest.raises(ValueError, match="one entry per modality"):
        MMDynamicsModule([60, 40], [5, 3], n_classes=3, gate_rank=[8])


# ------------------------------------------------------------------ low-rank gate: model, tl
def test_model_gate_rank_dict_and_errors(synth):
    ms.MMDynamics.setup_mudata(synth, labels_key="cell_type")
    model = ms.MMDynamics(synth, n_hidden=8, gate_rank={"rna": 16})
    rna, prot = model.module.branches
    assert isinstance(rna.gate, LowRankFeatureGate) and rna.gate.rank == 16
    assert isinstance(prot.gate, FeatureGate)
    assert "gate_rank=[16, None]" in model._model_summary_string
    n_prot = synth["prot"].n_vars
    with pytest.raises(ValueError, match=rf"modality 'prot'.*{n_prot} features"):
        ms.MMDynamics(synth, gate_rank={"prot": n_prot})
    # One int: modalities with no more features keep the full gate.
    small = ms.MMDynamics(synth, n_hidden=8, gate_rank=n_prot)
    assert isinstance(small.module.branches[0].gate, LowRankFeatureGate)
    assert isinstance(small.module.branches[1].gate, FeatureGate)
    with pytest.raises(KeyError, match="unknown modalities"):
        ms.MMDynamics(synth, gate_rank={"atac": 4})
    with pytest.raises(TypeError, match="gate_rank"):
        ms.MMDynamics(synth, gate_rank=2.5)


def test_fit_with_gate_rank_predicts_and_round_trips(synth_batches, tmp_path, fast):
    train, query = synth_batches
    model = ms.tl.fit(train, "cell_type", gate_rank=8, seed=0, **fast)
    assert all(isinstance(b.gate, LowRankFeatureGate) for b in model.module.branches)
    assert train.uns["mmdyn"]["model_params"]["gate_rank"] == 8
    info = train["rna"].var["mmdyn_informativeness"]
    assert ((info > 0) & (info < 1)).all()
    model.save(tmp_path / "model")
    loaded = ms.MMDynamics.load(tmp_path / "model", mdata=query)
    np.testing.assert_allclose(loaded.predict(query, soft=True).to_numpy(),
                               model.predict(query, soft=True).to_numpy(), atol=1e-6)


def test_recipes_gate_rank():
    assert RECIPES["paper"]["gate_rank"] is None
    assert RECIPES["default"]["gate_rank"] == "auto"


def test_auto_gate_rank_goes_low_rank_from_the_threshold(synth, monkeypatch):
    import mmdyn_sc.model._options as mmdynamics_model

    ms.MMDynamics.setup_mudata(synth, labels_key="cell_type")
    n_rna, n_prot = synth["rna"].n_vars, synth["prot"].n_vars
    assert n_prot < n_rna < mmdynamics_model.AUTO_GATE_MIN_FEATURES  # 200 genes: full gates
    auto = ms.MMDynamics(synth, n_hidden=8, gate_rank="auto")
    assert all(isinstance(b.gate, FeatureGate) for b in auto.module.branches)
    monkeypatch.setattr(mmdynamics_model, "AUTO_GATE_MIN_FEATURES", n_rna)
    auto = ms.MMDynamics(synth, n_hidden=8, gate_rank="auto")
    rna, prot = auto.module.branches
    assert isinstance(rna.gate, LowRankFeatureGate)
    assert rna.gate.rank == mmdynamics_model.AUTO_GATE_RANK
    assert isinstance(prot.gate, FeatureGate)
    with pytest.raises(TypeError, match="auto"):
        ms.MMDynamics(synth, gate_rank="full")


def test_fit_default_records_auto_gate_rank(synth_fitted):
    train, _, model = synth_fitted  # tl.fit's defaults
    assert train.uns["mmdyn"]["model_params"]["gate_rank"] == "auto"
    assert all(isinstance(b.gate, FeatureGate) for b in model.module.branches)  # 200 genes


# ------------------------------------------------------------------ DDP
class _Stop(Exception):
    pass


@pytest.mark.parametrize(
    ("strategy", "given", "expected"),
    [("ddp", None, True), ("ddp_find_unused_parameters_true", None, True),
     (None, None, None), ("ddp", False, False)],
)
def test_train_switches_on_the_distributed_sampler_for_ddp(synth, monkeypatch, strategy, given,
                                                           expected):
    ms.MMDynamics.setup_mudata(synth, labels_key="cell_type")
    model = ms.MMDynamics(synth, n_hidden=8)
    seen = {}

    def splitter(*args, **kwargs):
        seen.update(kwargs)
        raise _Stop

    monkeypatch.setattr(model, "_data_splitter_cls", splitter)
    kwargs = {} if strategy is None else {"strategy": strategy}
    split_kwargs = None if given is None else {"distributed_sampler": given}
    with pytest.raises(_Stop):
        model.train(max_epochs=1, datasplitter_kwargs=split_kwargs, **kwargs)
    assert seen.get("distributed_sampler") is expected
    assert len(seen["external_indexing"]) == 3


def test_is_ddp_strategy():
    from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy

    assert is_ddp_strategy("ddp") and is_ddp_strategy("ddp_spawn")
    assert is_ddp_strategy(DDPStrategy())
    assert not is_ddp_strategy(None) and not is_ddp_strategy("auto")
    assert not is_ddp_strategy(SingleDeviceStrategy("cpu"))


DDP_SCRIPT = '''
import json
import sys

import torch


def load_donors():
    """Synthetic CITE-seq, prepared: (train, query), alternate cells.

    8 classes with one informative feature each per modality: hard enough that macro F1
    (about 0.57 after these 30 epochs) can tell two fits apart.
    """
    import numpy as np

    from mmdyn_sc import datasets, pp

    mdata, _ = datasets.synthetic(n_cells=400, n_classes=8, n_informative=1,
                                  noise_modality=False, seed=0)
    pp.prepare(mdata)
    half = np.arange(mdata.n_obs) % 2 == 0
    return mdata[half].copy(), mdata[~half].copy()


def main(devices, out, num_nodes=1):
    import mmdyn_sc as ms
    from mmdyn_sc._metrics import classification_metrics

    train, query = load_donors()
    model = ms.tl.fit(
        train, "cell_type", seed=0, max_epochs={epochs}, n_hidden=16, dropout=0.0,
        class_weights=None, lr=1e-2, early_stopping=False, enable_progress_bar=False,
        # Without modality dropout: its random masks differ between one and two processes
        # (each draws its own), which moved macro F1 by 0.056 here; this checks the sampler
        # and the gradient sync.
        confidence="tcp", modality_dropout=0.0,
        accelerator="cpu", devices=devices, num_nodes=num_nodes, strategy="ddp",
        batch_size={global_batch} // (devices * num_nodes),
    )
    checksum = float(sum(p.double().sum() for p in model.module.parameters()))
    result = {{"is_global_zero": model.is_global_zero, "checksum": checksum,
              "written": "mmdyn_prediction" in train.obs, "n_history": len(model.history)}}
    if model.is_global_zero:
        result["n_epochs"] = len(model.history["train_loss"])
        y = query.obs["cell_type"].astype(str).to_numpy()
        pred = model.predict(query).astype(str).to_numpy()
        result["f1_macro"] = classification_metrics(y, pred)["f1_macro"]
        result["validation_f1_macro"] = (
            model.history["validation_f1_macro"].to_numpy().ravel().tolist())
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    with open(f"{{out}}.rank{{rank}}.json", "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], *(int(n) for n in sys.argv[3:]))
'''


def _fit_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _run_fit_script(script: Path, devices: int, out: str) -> float:
    env = _fit_env()
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(script), str(devices), out], cwd=script.parent,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return time.perf_counter() - start


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_two_nodes(script: Path, out: str) -> float:
    """The fit script on two "nodes" of one process each, started by torchrun on loopback."""
    env = _fit_env()
    port = _free_port()
    start = time.perf_counter()
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
             "--nproc-per-node", "1", "--node-rank", str(rank), "--master-addr", "127.0.0.1",
             "--master-port", str(port), str(script), "1", out, "2"],
            cwd=script.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        for rank in (0, 1)
    ]
    try:
        outputs = [node.communicate(timeout=300) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    for node, (_, err) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, err[-3000:]
    return time.perf_counter() - start


def _read(path: Path) -> dict:
    with open(path) as f:
        return json.load(f)


@pytest.mark.slow
def test_ddp_two_processes_matches_one_process(tmp_path):
    """Two gloo processes with half the batch each match one process with the whole batch.

    Both fits use the distributed sampler (the reference with one process), so that with the
    same seed they draw the same global minibatches; without dropout or class weights, DDP's
    mean of the two half-batch gradients is the one-process gradient. Only process 0
    writes results. The same holds for two nodes of one process each (``num_nodes=2``),
    started by ``torchrun`` on loopback as a multi-node launch would start them.
    """
    script = tmp_path / "fit_ddp.py"
    script.write_text(DDP_SCRIPT.format(epochs=30, global_batch=64))
    seconds_one = _run_fit_script(script, 1, "one")
    seconds_two = _run_fit_script(script, 2, "two")
    one, two, other = (_read(tmp_path / name) for name in
                       ("one.rank0.json", "two.rank0.json", "two.rank1.json"))
    print(f"macro F1 one process {one['f1_macro']:.3f} ({seconds_one:.0f} s), two processes "
          f"{two['f1_macro']:.3f} ({seconds_two:.0f} s)")
    assert one["written"] and two["written"]
    assert two["is_global_zero"] and two["n_epochs"] == 30
    assert not other["is_global_zero"]
    assert not other["written"] and other["n_history"] == 0
    assert other["checksum"] == pytest.approx(two["checksum"], rel=1e-9)
    assert abs(two["f1_macro"] - one["f1_macro"]) <= 0.03
    # The logged metrics are those of all validation cells (the processes' confusion
    # matrices are summed first, not their macro F1 averaged): the first epoch's, before
    # the fits can drift apart, is close to the one-process value (not equal: the
    # distributed sampler evens out the processes' shares of the validation cells).
    print(f"first-epoch validation macro F1 one process {one['validation_f1_macro'][0]:.4f}, "
          f"two processes {two['validation_f1_macro'][0]:.4f}")
    assert two["validation_f1_macro"][0] == pytest.approx(one["validation_f1_macro"][0],
                                                          abs=0.01)

    # Multi-node as far as one machine allows: two torchrun "nodes" (num_nodes=2, one
    # process each) on loopback, with the same global batch.
    seconds_nodes = _run_two_nodes(script, "nodes")
    node0, node1 = (_read(tmp_path / f"nodes.rank{r}.json") for r in (0, 1))
    print(f"two torchrun nodes {node0['f1_macro']:.3f} ({seconds_nodes:.0f} s)")
    assert node0["is_global_zero"] and node0["written"] and node0["n_epochs"] == 30
    assert not node1["is_global_zero"] and not node1["written"]
    assert node1["checksum"] == pytest.approx(node0["checksum"], rel=1e-9)
    assert abs(node0["f1_macro"] - one["f1_macro"]) <= 0.03


# ------------------------------------------------------------------ sparse minibatches
def _record_dense_blocks(monkeypatch) -> list[tuple[int, ...]]:
    """Record the shape of every dense array made from a scipy sparse matrix or array."""
    shapes: list[tuple[int, ...]] = []
    classes = {klass for cls in (sparse.csr_matrix, sparse.csr_array, sparse.csc_matrix,
                                 sparse.coo_matrix)
               for klass in cls.__mro__ if "toarray" in vars(klass)}
    for klass in classes:
        original = vars(klass)["toarray"]

        def toarray(self, *args, _original=original, **kwargs):
            out = _original(self, *args, **kwargs)
            shapes.append(out.shape)
            return out

        monkeypatch.setattr(klass, "toarray", toarray)
    return shapes


def _max_rows(shapes: list[tuple[int, ...]]) -> int:
    return max((s[0] for s in shapes if len(s) == 2), default=0)


@pytest.mark.parametrize("feature_scaling", ["standard", "minmax"])
def test_loader_never_densifies_the_whole_matrix(synth, monkeypatch, feature_scaling):
    for mod in ("rna", "prot"):
        layer = synth[mod].layers["mmdyn_prepared"]
        synth[mod].layers["mmdyn_prepared"] = sparse.csr_matrix(layer, dtype=np.float32)
    # A third of the cells lack protein: alignment places the rest among all cells.
    keep = np.arange(synth.n_obs) % 3 != 0
    synth.mod["prot"] = synth["prot"][keep].copy()
    synth.update()
    batch_size, predict_batch = 32, 64
    assert synth.n_obs > 4 * predict_batch

    shapes = _record_dense_blocks(monkeypatch)
    ms.MMDynamics.setup_mudata(synth, labels_key="cell_type")
    model = ms.MMDynamics(synth, n_hidden=8, feature_scaling=feature_scaling, feature_clip=None)
    model.train(max_epochs=2, batch_size=batch_size, enable_progress_bar=False)
    assert shapes, "no minibatch was densified: the instrumentation missed the loader"
    assert _max_rows(shapes) == batch_size

    shapes.clear()
    model.predict(synth, batch_size=predict_batch)
    assert _max_rows(shapes) == predict_batch


# ------------------------------------------------------------------ backed h5mu
def _write_prepared_h5mu(mdata, path) -> None:
    """``mdata`` with its prepared data as float32 CSR in X (what a backed file serves)."""
    import mudata as md

    mods = {}
    for mod in mdata.mod:
        adata = mdata[mod].copy()
        adata.X = sparse.csr_matrix(adata.layers.pop("mmdyn_prepared"), dtype=np.float32)
        mods[mod] = adata
    out = md.MuData(mods)
    out.obs["cell_type"] = mdata.obs["cell_type"].to_numpy()
    out.write(path)


def test_training_from_a_backed_h5mu_equals_in_memory(synth_batches, tmp_path, fast):
    import mudata as md

    from mmdyn_sc._data._chunks import is_backed

    train, query = synth_batches
    _write_prepared_h5mu(train, tmp_path / "train.h5mu")
    _write_prepared_h5mu(query, tmp_path / "query.h5mu")
    options = {**fast, "feature_scaling": "standard"}
    in_memory = md.read_h5mu(tmp_path / "train.h5mu")
    reference = ms.tl.fit(in_memory, "cell_type", **options)

    backed = md.read_h5mu(tmp_path / "train.h5mu", backed=True)
    assert is_backed(backed["rna"].X)
    model = ms.tl.fit(backed, "cell_type", **options)
    assert is_backed(model.adata["rna"].X)  # trained from disk, not loaded
    for name, value in reference.module.state_dict().items():
        assert torch.equal(value, model.module.state_dict()[name]), name
    np.testing.assert_array_equal(backed.obsm["mmdyn_proba"].to_numpy(),
                                  in_memory.obsm["mmdyn_proba"].to_numpy())
    # A backed query predicts as the same query in memory.
    query_backed = md.read_h5mu(tmp_path / "query.h5mu", backed=True)
    np.testing.assert_array_equal(model.predict(query_backed, soft=True).to_numpy(),
                                  reference.predict(md.read_h5mu(tmp_path / "query.h5mu"),
                                                    soft=True).to_numpy())


def test_a_backed_modality_the_loader_cannot_read_is_loaded_with_a_warning(synth, tmp_path,
                                                                           caplog):
    import mudata as md

    _write_prepared_h5mu(synth, tmp_path / "all.h5mu")
    backed = md.read_h5mu(tmp_path / "all.h5mu", backed=True)
    keep = list(backed["rna"].var_names[: backed["rna"].n_vars // 2])
    with caplog.at_level("WARNING", logger="mmdyn_sc"):
        ms.MMDynamics.setup_mudata(backed, labels_key="cell_type",
                                   features={"rna": keep, "prot": list(backed["prot"].var_names)})
    assert "is backed but is read into memory" in caplog.text
    assert "features differ" in caplog.text
