"""The training plan's per-epoch metrics (running sums, confusion matrix) and its optimizer."""

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mmdyn_sc._metrics import classification_metrics, metrics_from_confusion
from mmdyn_sc.model._registry_keys import LABELS, modality_present, modality_x
from mmdyn_sc.model._training_plan import (
    MMDynamicsTrainingPlan,
    adam,
    epoch_metrics,
    fused_adam_supported,
)
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


def _plan(module, world_size=1, reduce=None):
    """A training plan whose ``log_dict`` calls are recorded, under a stand-in trainer."""
    plan = MMDynamicsTrainingPlan(module, n_modalities=2)
    plan._trainer = SimpleNamespace(world_size=world_size,
                                    strategy=SimpleNamespace(reduce=reduce))
    plan.logged = []
    plan.log_dict = lambda metrics, **kwargs: plan.logged.append((metrics, kwargs))
    return plan


def _validation_steps(plan, module, seeds):
    """Validation steps on random batches; (labels, predictions, losses, batch sizes)."""
    ys, ps, losses, ns = [], [], [], []
    for seed in seeds:
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
    return ys, ps, losses, ns


def test_plan_epoch_metrics_match_the_per_cell_metrics():
    """Running sums over several steps log what the per-cell labels and predictions give."""
    torch.manual_seed(0)
    module = MMDynamicsModule([6, 4], [5, 3], n_classes=4).eval()
    plan = _plan(module)
    logged = plan.logged
    ys, ps, losses, ns = _validation_steps(plan, module, range(5))
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


def test_ddp_epoch_metrics_are_those_of_all_cells():
    """Two processes' shares: the confusion matrices and sums are added before any metric.

    The collective sum is simulated as ``all_reduce`` works: the k-th call on one process
    meets the k-th call on the other and both get the sum. First each process's
    contributions are recorded (a reduce that returns its input: the process's own share,
    what each process computed before the fix), then the epoch ends again from the same sums
    with the collective sum. Macro F1 is then that of all cells, the same on both processes,
    and not the mean of the two processes' own values (what Lightning logged before).
    """
    torch.manual_seed(0)
    module = MMDynamicsModule([6, 4], [5, 3], n_classes=4).eval()
    shares = {0: range(0, 4), 1: range(10, 13)}
    plans = {r: _plan(module, world_size=2) for r in shares}
    cells = {r: _validation_steps(plans[r], module, shares[r]) for r in shares}
    saved = {r: copy.deepcopy(plans[r]._epoch_sums) for r in shares}

    contributions = {r: [] for r in shares}
    for r in shares:
        def record(tensor, reduce_op, r=r):
            assert reduce_op == "sum"
            contributions[r].append(tensor.clone())
            return tensor
        plans[r]._trainer.strategy.reduce = record
        plans[r].on_validation_epoch_end()
    own = {r: plans[r].logged.pop()[0] for r in shares}

    for r in shares:
        plans[r]._epoch_sums = saved[r]
        calls = iter(range(len(contributions[r])))

        def all_reduce(tensor, reduce_op, calls=calls):
            k = next(calls)  # the k-th collective of every process
            return sum(c[k] for c in contributions.values())
        plans[r]._trainer.strategy.reduce = all_reduce
        plans[r].on_validation_epoch_end()
    (exact, kwargs), = plans[0].logged
    assert plans[1].logged == plans[0].logged
    assert kwargs["sync_dist"] is True and kwargs["reduce_fx"] == "max"

    y = np.concatenate([np.concatenate(cells[r][0]) for r in shares])
    p = np.concatenate([np.concatenate(cells[r][1]) for r in shares])
    expected = classification_metrics(y, p)
    assert exact["validation_f1_macro"] == expected["f1_macro"]
    assert exact["validation_balanced_accuracy"] == expected["balanced_accuracy"]
    assert exact["validation_accuracy"] == expected["accuracy"]
    losses = np.concatenate([cells[r][2] for r in shares])
    ns = np.concatenate([cells[r][3] for r in shares])
    assert exact["validation_loss"] == pytest.approx(np.dot(losses, ns) / ns.sum(), rel=1e-5)
    for r in shares:  # the recorded shares are each process's own cells
        y_r, p_r = np.concatenate(cells[r][0]), np.concatenate(cells[r][1])
        assert own[r]["validation_f1_macro"] == classification_metrics(y_r, p_r)["f1_macro"]
    mean_of_shares = np.mean([own[r]["validation_f1_macro"] for r in shares])
    assert abs(mean_of_shares - exact["validation_f1_macro"]) > 0.01


def test_epoch_metrics_without_cells_are_empty():
    sums = {"n": 0, "loss": torch.zeros(()), "parts": {}, "confusion": torch.zeros(4)}
    assert epoch_metrics(sums, "train") == {}


def test_adam_is_fused_where_supported():
    params = [torch.nn.Parameter(torch.randn(3))]
    optimizer = adam(params, lr=1e-3)
    assert optimizer.defaults["fused"] is True  # CPU, torch >= 2.4
    meta = [torch.nn.Parameter(torch.randn(3, device="meta"))]
    assert not fused_adam_supported(meta)
    assert not adam(meta, lr=1e-3).defaults["fused"]
    frozen_counts = [torch.nn.Parameter(torch.zeros(3, dtype=torch.int64), requires_grad=False)]
    assert not fused_adam_supported(frozen_counts)


def test_adam_falls_back_where_the_fused_step_raises(monkeypatch):
    """Where torch's fused step raises (an unsupported device), the default Adam is used,
    and it steps like torch's default Adam."""
    original = torch.optim.Adam

    class NoFusedKernels(original):
        def step(self, closure=None):
            if self.defaults["fused"]:
                raise RuntimeError("`fused=True` requires ... supported devices")
            return super().step(closure)

    monkeypatch.setattr(torch.optim, "Adam", NoFusedKernels)
    weights = torch.nn.Parameter(torch.arange(3.0))
    optimizer = adam([weights], lr=0.1)
    assert not optimizer.defaults["fused"]
    weights.grad = torch.ones(3)
    optimizer.step()
    reference = torch.nn.Parameter(torch.arange(3.0))
    reference.grad = torch.ones(3)
    original([reference], lr=0.1).step()
    assert torch.equal(weights.detach(), reference.detach())
