"""The training plan's per-epoch metrics (running sums, confusion matrix) and its optimizer."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdyn_sc._metrics import classification_metrics, metrics_from_confusion
from mmdyn_sc.model._registry_keys import LABELS, modality_present, modality_x
from mmdyn_sc.model._training_plan import MMDynamicsTrainingPlan, adam
from mmdyn_sc.module import MMDynamicsModule


def _confusion(y, p, n_classes):
    return np.bincount(y * n_classes + p, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes
    )


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 7).flatmap(lambda c: st.tuples(
    st.just(c), st.lists(st.tuples(st.integers(0, c - 1), st.integers(0, c - 1)),
                         min_size=1, max_size=60))))
def test_metrics_from_confusion_equal_classification_metrics(case):
    """Exactly sklearn's numbers, also with classes absent from the truth or the predictions."""
    n_classes, pairs = case
    y, p = np.array(pairs).T
    expected = classification_metrics(y, p)
    got = metrics_from_confusion(_confusion(y, p, n_classes))
    assert got == {k: expected[k] for k in ("accuracy", "f1_macro", "balanced_accuracy")}


@pytest.mark.parametrize("seed", range(20))
def test_metrics_from_confusion_many_cells(seed):
    rng = np.random.default_rng(seed)
    n_classes = int(rng.integers(2, 30))
    y = rng.integers(0, n_classes, int(rng.integers(1, 5000)))
    p = np.where(rng.random(y.size) < 0.6, y, rng.integers(0, n_classes, y.size))
    p[p == n_classes - 1] = 0  # a class never predicted
    y[y == 1] = 2  # a class never true
    expected = classification_metrics(y, p)
    got = metrics_from_confusion(_confusion(y, p, n_classes))
    assert got == {k: expected[k] for k in got}
    assert metrics_from_confusion(np.zeros((3, 3), dtype=int)) == {}


def test_plan_epoch_metrics_match_the_per_cell_metrics():
    """Running sums over several steps log what the per-cell labels and predictions give."""
    torch.manual_seed(0)
    module = MMDynamicsModule([6, 4], [5, 3], n_classes=4).eval()
    plan = MMDynamicsTrainingPlan(module, n_modalities=2)
    plan._trainer = SimpleNamespace(world_size=1)
    logged = []
    plan.log_dict = lambda metrics, **kwargs: logged.append((metrics, kwargs))
    ys, ps, losses, ns = [], [], [], []
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        n = 7 + seed
        batch = {modality_x(0): torch.randn(n, 6, generator=g),
                 modality_x(1): torch.randn(n, 4, generator=g),
                 modality_present(0): torch.ones(n, 1), modality_present(1): torch.ones(n, 1),
                 LABELS: torch.randint(0, 3, (n, 1), generator=g).float()}  # class 3 unused
        with torch.no_grad():
            losses.append(float(plan.validation_step(batch, seed)))
            out = module([batch[modality_x(0)], batch[modality_x(1)]], torch.ones(n, 2))
        ys.append(batch[LABELS].reshape(-1).long().numpy())
        ps.append(out["fused_logits"].argmax(1).numpy())
        ns.append(n)
    plan.on_validation_epoch_end()
    plan.on_validation_epoch_end()  # the sums were reset: nothing more is logged
    assert len(logged) == 1
    metrics, kwargs = logged[0]
    assert kwargs["sync_dist"] is False
    expected = classification_metrics(np.concatenate(ys), np.concatenate(ps))
    assert metrics["validation_accuracy"] == expected["accuracy"]
    assert metrics["validation_f1_macro"] == expected["f1_macro"]
    assert metrics["validation_balanced_accuracy"] == expected["balanced_accuracy"]
    assert metrics["validation_loss"] == pytest.approx(np.dot(losses, ns) / sum(ns), rel=1e-5)
    assert {f"validation_loss_{k}" for k in ("fused", "sparsity", "confidence", "modality")} \
        <= set(metrics)


def test_adam_is_fused_where_supported():
    params = [torch.nn.Parameter(torch.randn(3))]
    assert adam(params, lr=1e-3).defaults["fused"] is True  # CPU, torch >= 2.4
    meta = [torch.nn.Parameter(torch.randn(3, device="meta"))]
    assert not adam(meta, lr=1e-3).defaults["fused"]
