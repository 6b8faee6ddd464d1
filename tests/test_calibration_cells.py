"""Held-out calibration cells of ``confidence="tcp_calibrated"``: the heads learn TCP on cells
the classifiers do not fit (module on random tensors; split and fit on synthetic CITE-seq; the
gain in predicted TCP on real BMMC data)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mmdyn_sc as ms
from mmdyn_sc.model._split import calibration_split
from mmdyn_sc.module import MMDynamicsModule


def _batch(n=16, dims=(6, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(n, d, generator=g) for d in dims]
    y = torch.randint(0, 3, (n,), generator=g)
    present = torch.ones(n, len(dims))
    present[:3, 1] = 0
    held_out = torch.zeros(n)
    held_out[[1, 5, 9, 13]] = 1
    return xs, y, present, held_out


def _module(confidence="tcp_calibrated", seed=0, **kwargs):
    torch.manual_seed(seed)
    return MMDynamicsModule([6, 4], [5, 3], n_classes=3, confidence=confidence, **kwargs)


def _grads(module, loss):
    module.zero_grad()
    loss.backward()
    return {k: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
            for k, p in module.named_parameters()}


def _grads_with_labels(module, xs, y, present, held_out):
    torch.manual_seed(1)  # the same dropout masks every time
    loss, _ = module.loss(module(xs, present), y, present, held_out=held_out, xs=xs)
    return _grads(module, loss)


def test_held_out_cells_train_the_confidence_heads_only():
    xs, y, present, held_out = _batch()
    module = _module()
    module.train()
    base = _grads_with_labels(module, xs, y, present, held_out)
    is_head = {name: ".confidence." in name for name in base}
    assert all(base[name].abs().sum() > 0 for name in base if is_head[name])
    # Other labels on the held-out cells: only the heads' gradients may change.
    y_held = y.clone()
    y_held[held_out > 0] = (y_held[held_out > 0] + 1) % 3
    changed = _grads_with_labels(module, xs, y_held, present, held_out)
    for name in base:
        if not is_head[name]:
            torch.testing.assert_close(base[name], changed[name], msg=name)
    # Other labels on the fitted cells: the heads' gradients stay, the classifiers' change.
    y_fit = y.clone()
    y_fit[held_out == 0] = (y_fit[held_out == 0] + 1) % 3
    changed = _grads_with_labels(module, xs, y_fit, present, held_out)
    for name in base:
        if is_head[name]:
            torch.testing.assert_close(base[name], changed[name], msg=name)
    assert not torch.equal(base["fused_classifier.weight"], changed["fused_classifier.weight"])


def test_held_out_confidence_error_is_the_eval_mode_tcp_absolute_error():
    xs, y, present, held_out = _batch()
    module = _module()
    module.train()
    error = module.held_out_confidence_error(xs, y, present, held_out)
    module.eval()
    rows = held_out > 0
    with torch.no_grad():
        out = module([x[rows] for x in xs], present[rows])
    expected = 0.0
    for m in range(2):
        tcp = F.softmax(out["modality_logits"][m], 1).gather(1, y[rows, None]).squeeze(1)
        has = present[rows, m]
        expected += ((out["tcp_hat"][m] - tcp).abs() * has).sum() / has.sum()
    torch.testing.assert_close(error, expected)
    module.train()
    module.held_out_confidence_error(xs, y, present, held_out)
    assert module.training  # the call leaves the mode as it found it


def test_batch_without_held_out_cells_still_reaches_every_head():
    xs, y, present, _ = _batch()
    module = _module()
    module.train()
    error = module.held_out_confidence_error(xs, y, present, torch.zeros(len(y)))
    assert float(error.detach()) == 0.0
    error.backward()  # DDP needs a gradient (here 0) for every head parameter
    for branch in module.branches:
        for p in branch.confidence.parameters():
            assert p.grad is not None and torch.all(p.grad == 0)


@pytest.mark.parametrize("confidence", ["tcp", "energy", "pdf"])
def test_held_out_cells_need_tcp_calibrated(confidence):
    xs, y, present, held_out = _batch()
    module = _module(confidence)
    with pytest.raises(ValueError, match="tcp_calibrated"):
        module.loss(module(xs, present), y, present, held_out=held_out, xs=xs)


def test_calibration_split_is_a_seeded_per_class_share_of_training_cells():
    labels = np.repeat(np.arange(4), [40, 20, 3, 1])
    labels = np.concatenate([labels, [-1, -1]])
    train_idx = np.arange(0, 64, 1)
    held = calibration_split(labels, train_idx, 0.25, seed=3)
    assert np.isin(held, train_idx).all() and np.all(np.diff(held) > 0)
    counts = np.bincount(labels[held], minlength=4)
    assert counts.tolist() == [10, 5, 1, 0]  # 3 cells: round(2.25)=2 stay; 1 cell stays
    np.testing.assert_array_equal(held, calibration_split(labels, train_idx, 0.25, seed=3))
    assert not np.array_equal(held, calibration_split(labels, train_idx, 0.25, seed=4))
    with pytest.raises(ValueError, match="calibration size"):
        calibration_split(labels, train_idx, 1.0, seed=0)


def test_fit_marks_calibration_cells_and_only_for_tcp_calibrated(synth_batches, fast):
    train, _ = synth_batches
    model = ms.tl.fit(train, "cell_type", confidence="tcp_calibrated", seed=0, **fast)
    split = train.obs["mmdyn_split"].astype(str).to_numpy()
    held = np.flatnonzero(split == "calibration")
    np.testing.assert_array_equal(held, model.calibration_indices)
    n_fit = int((split == "train").sum())
    assert 0.05 < len(held) / (len(held) + n_fit) < 0.15  # calibration_size 0.1 per class
    assert set(held).isdisjoint(model.validation_indices)
    assert train.uns["mmdyn"]["train_params"]["calibration_size"] == 0.1
    assert "calibration" in train.uns["mmdyn"]["metrics"]
    assert "_mmdyn_calibration" not in train.obs  # the flag lives in the private copy

    for options in ({"confidence": "tcp_calibrated", "calibration_size": 0.0},
                    {"confidence": "tcp"}, {"confidence": "pdf"}):
        model = ms.tl.fit(train, "cell_type", seed=0, **options, **fast)
        assert len(model.calibration_indices) == 0
        assert "calibration" not in set(train.obs["mmdyn_split"].astype(str))
    with pytest.raises(ValueError, match="calibration_size"):
        ms.tl.fit(train, "cell_type", confidence="tcp_calibrated", calibration_size=1.0,
                  **fast)


@pytest.mark.slow
def test_held_out_calibration_predicts_validation_tcp_better(bmmc):
    """On real BMMC cells, heads trained on held-out cells predict the TCP of validation
    cells better than heads trained on the cells the classifiers fit (same seed)."""
    reports = {}
    for size in (0.1, 0.0):
        ms.tl.fit(bmmc, "cell_type", confidence="tcp_calibrated", calibration_size=size,
                  seed=0, max_epochs=60, enable_progress_bar=False, attribution=False)
        reports[size] = bmmc.uns["mmdyn"]["confidence"]["modalities"]
    for mod in ("rna", "prot"):
        assert reports[0.1][mod]["relative_error"] < reports[0.0][mod]["relative_error"], mod
        assert reports[0.1][mod]["spearman"] > 0.2, mod
