"""The torch module on random tensors: shapes, masks, switches, loss terms."""

import pytest
import torch

from mmdyn_sc.module import MMDynamicsModule

#: The original MM dynamics: predicted TCP as the modality weight, no modality dropout. Named
#: here so that these tests keep testing it whatever the module's defaults become.
ORIGINAL = {"confidence": "tcp", "modality_dropout": 0.0, "class_weights": None}


def _inputs(n=12, dims=(6, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(n, d, generator=g) for d in dims]
    y = torch.randint(0, 3, (n,), generator=g)
    return xs, y


def test_shapes_and_weights():
    xs, y = _inputs()
    module = MMDynamicsModule([6, 4], [5, 3], n_classes=3, **ORIGINAL)
    out = module(xs, torch.ones(12, 2))
    assert out["fused_logits"].shape == (12, 3)
    assert out["latent"].shape == (12, 8)
    assert out["weights"].shape == (12, 2)
    assert [g.shape for g in out["gates"]] == [(12, 6), (12, 4)]
    assert all(((g > 0) & (g < 1)).all() for g in out["gates"])
    # With MI, the weight of a present modality is its predicted TCP.
    torch.testing.assert_close(out["weights"][:, 0], out["confidence"][0])


def test_absent_modality_contributes_nothing():
    xs, y = _inputs()
    module = MMDynamicsModule([6, 4], [5, 3], n_classes=3, **ORIGINAL).eval()
    present = torch.ones(12, 2)
    present[:4, 1] = 0
    out = module(xs, present)
    assert torch.all(out["latent"][:4, 5:] == 0)
    assert torch.all(out["weights"][:4, 1] == 0)
    # Changing the absent modality's input does not change those cells' predictions.
    xs2 = [xs[0], xs[1] + 100.0]
    out2 = module(xs2, present)
    torch.testing.assert_close(out["fused_logits"][:4], out2["fused_logits"][:4])
    assert not torch.allclose(out["fused_logits"][4:], out2["fused_logits"][4:])


@pytest.mark.parametrize("fi", [True, False])
@pytest.mark.parametrize("mi", [True, False])
def test_switches(fi, mi):
    xs, y = _inputs()
    module = MMDynamicsModule([6, 4], [5, 3], n_classes=3, feature_informativeness=fi,
                              modality_informativeness=mi, **ORIGINAL)
    out = module(xs, torch.ones(12, 2))
    loss, parts = module.loss(out, y, torch.ones(12, 2))
    assert (out["gates"][0] is not None) == fi
    assert (out["confidence"][0] is not None) == mi
    assert (parts["sparsity"] > 0) == fi
    assert (parts["confidence"] > 0) == mi
    if not mi:
        assert torch.all(out["weights"] == 1)
    loss.backward()
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_loss_is_the_original_sum():
    xs, y = _inputs()
    module = MMDynamicsModule([6, 4], [5, 3], n_classes=3, dropout=0.0, **ORIGINAL)
    out = module(xs, torch.ones(12, 2))
    loss, parts = module.loss(out, y, torch.ones(12, 2))
    f = torch.nn.functional
    expected = f.cross_entropy(out["fused_logits"], y)
    for m in range(2):
        p = f.softmax(out["modality_logits"][m], 1)
        tcp = p.gather(1, y[:, None]).squeeze(1)
        expected = expected + out["gates"][m].mean() + f.mse_loss(out["confidence"][m], tcp)
        expected = expected + f.cross_entropy(out["modality_logits"][m], y)
    torch.testing.assert_close(loss, expected)
    weighted = MMDynamicsModule([6, 4], [5, 3], n_classes=3, dropout=0.0,
                                loss_weights={"sparsity": 0.0}, **ORIGINAL)
    weighted.load_state_dict(module.state_dict())
    loss_w, _ = weighted.loss(weighted(xs, torch.ones(12, 2)), y, torch.ones(12, 2))
    torch.testing.assert_close(loss_w, loss - parts["sparsity"])


def test_unknown_loss_weight():
    with pytest.raises(ValueError, match="Unknown loss weight"):
        MMDynamicsModule([3], [2], 2, loss_weights={"l1": 1.0})
