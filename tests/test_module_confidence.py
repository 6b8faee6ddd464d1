"""Confidence estimators and modality dropout of the torch module, on random tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from mmdyn_sc.module import CONFIDENCE_OPTIONS, MMDynamicsModule
from mmdyn_sc.module._energy import energy_score, energy_weights
from mmdyn_sc.module._modality_dropout import sample_fusion_mask
from mmdyn_sc.module._pdf import holo_confidence, pdf_weights, relative_calibration

BOUNDED = ("tcp_calibrated", "energy", "pdf")
NORMALISED = ("energy", "pdf")


def _inputs(n=12, dims=(6, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(n, d, generator=g) for d in dims]
    y = torch.randint(0, 3, (n,), generator=g)
    return xs, y


def _present(n=12):
    present = torch.ones(n, 2)
    present[:4, 1] = 0  # cells 0-3 lack modality 1
    present[10:, 0] = 0  # cells 10-11 lack modality 0
    return present


def _module(confidence, seed=0, **kwargs):
    """A small module; no modality dropout unless asked for (explicit, whatever the default)."""
    torch.manual_seed(seed)
    kwargs.setdefault("modality_dropout", 0.0)
    return MMDynamicsModule([6, 4], [5, 3], n_classes=3, confidence=confidence, **kwargs)


# --- every option ---------------------------------------------------------------------------


@pytest.mark.parametrize("confidence", CONFIDENCE_OPTIONS)
@pytest.mark.parametrize("training", [True, False])
def test_forward_shapes_and_ranges(confidence, training):
    xs, _ = _inputs()
    present = _present()
    present[5] = 0  # a cell with no modality at all
    module = _module(confidence).train(training)
    out = module(xs, present)
    assert out["fused_logits"].shape == (12, 3)
    assert out["latent"].shape == (12, 8)
    assert out["weights"].shape == (12, 2)
    assert torch.isfinite(out["weights"]).all() and torch.isfinite(out["fused_logits"]).all()
    assert torch.all(out["weights"][present == 0] == 0)
    assert len(out["confidence"]) == len(out["tcp_hat"]) == 2
    for m in range(2):
        assert out["confidence"][m].shape == (12,)
        assert torch.isfinite(out["confidence"][m]).all()
    if confidence in BOUNDED:
        for values in [out["weights"], *out["confidence"]]:
            assert ((values >= 0) & (values <= 1)).all()
    if module.predicts_tcp:
        assert all(t.shape == (12,) and torch.isfinite(t).all() for t in out["tcp_hat"])
    else:
        assert out["tcp_hat"] == [None, None]
    if confidence in NORMALISED:
        sums = out["weights"].sum(dim=1)
        torch.testing.assert_close(sums[present.sum(1) > 0], torch.ones(11))
        assert sums[5] == 0
    if confidence in ("tcp", "tcp_calibrated"):
        torch.testing.assert_close(out["confidence"][0], out["tcp_hat"][0])


@pytest.mark.parametrize("confidence", CONFIDENCE_OPTIONS)
def test_eval_confidence_is_the_weight_of_present_modalities(confidence):
    xs, _ = _inputs()
    present = _present()
    out = _module(confidence).eval()(xs, present)
    confidence_matrix = torch.stack(out["confidence"], dim=1)
    torch.testing.assert_close(out["weights"], confidence_matrix * present)


@pytest.mark.parametrize("confidence", CONFIDENCE_OPTIONS)
@pytest.mark.parametrize("training", [True, False])
def test_absent_modality_contributes_nothing(confidence, training):
    xs, y = _inputs()
    present = _present()
    module = _module(confidence, dropout=0.0).train(training)
    out = module(xs, present)
    changed = module([xs[0], xs[1] + 100.0], present)
    # Cells 0-3 lack modality 1: their prediction and weights do not see its input.
    torch.testing.assert_close(out["fused_logits"][:4], changed["fused_logits"][:4])
    torch.testing.assert_close(out["weights"][:4], changed["weights"][:4])
    assert torch.all(out["latent"][:4, 5:] == 0)
    assert not torch.allclose(out["fused_logits"][4:10], changed["fused_logits"][4:10])
    # Nor do the losses, when only the absent cells' input changes.
    xs_absent_changed = [xs[0], xs[1].clone()]
    xs_absent_changed[1][:4] += 100.0
    _, parts = module.loss(out, y, present)
    _, parts_changed = module.loss(module(xs_absent_changed, present), y, present)
    for key in parts:
        torch.testing.assert_close(parts[key], parts_changed[key])


@pytest.mark.parametrize("confidence", CONFIDENCE_OPTIONS)
@pytest.mark.parametrize("modality_dropout", [0.0, 0.5])
def test_loss_backward_finite(confidence, modality_dropout):
    xs, y = _inputs()
    present = _present()
    module = _module(confidence, modality_dropout=modality_dropout)
    loss, parts = module.loss(module(xs, present), y, present)
    assert set(parts) == {"fused", "sparsity", "confidence", "modality"}
    assert torch.isfinite(loss)
    assert (parts["confidence"] > 0) == module.predicts_tcp
    loss.backward()
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    if module.predicts_tcp:
        assert module.branches[0].confidence.linear.weight.grad.abs().sum() > 0


def test_predicts_tcp():
    assert [_module(c).predicts_tcp for c in CONFIDENCE_OPTIONS] == [True, True, False, True]
    for confidence in CONFIDENCE_OPTIONS:
        module = _module(confidence, modality_informativeness=False)
        assert not module.predicts_tcp
        xs, y = _inputs()
        out = module(xs, _present())
        assert out["confidence"] == [None, None] and out["tcp_hat"] == [None, None]
        torch.testing.assert_close(out["weights"], _present())
        assert module.loss(out, y, _present())[1]["confidence"] == 0


def test_heads_in_the_state_dict():
    names = {c: set(_module(c).state_dict()) for c in CONFIDENCE_OPTIONS}
    head = {"branches.0.confidence.linear.weight", "branches.0.confidence.linear.bias"}
    for confidence in ("tcp", "tcp_calibrated", "pdf"):
        assert head <= names[confidence]
    assert not any(".confidence." in name for name in names["energy"])


def test_bad_options():
    with pytest.raises(ValueError, match="tcp, tcp_calibrated, energy, pdf"):
        MMDynamicsModule([3], [2], 2, confidence="entropy")
    for rate in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="modality_dropout"):
            MMDynamicsModule([3], [2], 2, modality_dropout=rate)


# --- "tcp": the original, bit for bit --------------------------------------------------------


def _original_forward(module, xs, present):
    """The MM dynamics forward as it was before the confidence options, written out by hand."""
    present = present.to(xs[0].dtype)
    latents, weights, logits_all, gates, confidences = [], [], [], [], []
    for m, (branch, x) in enumerate(zip(module.branches, xs, strict=True)):
        x = (x - branch.scaler.shift) / branch.scaler.scale
        gate = torch.sigmoid(branch.gate.linear(x))
        x = x * gate
        h = F.dropout(F.relu(branch.encoder(x)), branch.dropout.p, module.training)
        logits = branch.classifier(h)
        tcp_hat = branch.confidence.linear(h).squeeze(-1)
        weight = tcp_hat * present[:, m]
        latents.append(h * weight.unsqueeze(-1))
        weights.append(weight)
        logits_all.append(logits)
        gates.append(gate)
        confidences.append(tcp_hat)
    latent = torch.cat(latents, dim=1)
    return {
        "fused_logits": module.fused_classifier(latent),
        "latent": latent,
        "weights": torch.stack(weights, dim=1),
        "modality_logits": logits_all,
        "gates": gates,
        "confidence": confidences,
    }


def _original_loss(module, outputs, y, present):
    """The MM dynamics loss as it was before the confidence options (TCP not detached)."""
    y = y.long()
    present = present.to(outputs["fused_logits"].dtype)
    cw = module.class_weights
    fused = F.cross_entropy(outputs["fused_logits"], y, weight=cw)
    zero = fused.new_zeros(())
    sparsity, confidence, modality = zero, zero, zero
    sample_weight = cw[y]
    for m in range(len(module.branches)):
        mask = present[:, m]
        n_present = mask.sum().clamp_min(1.0)
        logits = outputs["modality_logits"][m]
        ce = F.cross_entropy(logits, y, reduction="none")
        modality = modality + (ce * sample_weight * mask).sum() / (
            (sample_weight * mask).sum().clamp_min(1e-12)
        )
        sparsity = sparsity + (outputs["gates"][m].mean(dim=1) * mask).sum() / n_present
        tcp_hat = outputs["confidence"][m]
        tcp = torch.gather(F.softmax(logits, dim=1), 1, y.unsqueeze(1)).squeeze(1)
        confidence = confidence + (((tcp_hat - tcp) ** 2) * mask).sum() / n_present
    total = fused + sparsity + confidence + modality
    return total, {"fused": fused, "sparsity": sparsity, "confidence": confidence,
                   "modality": modality}


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("explicit", [True, False])
def test_default_is_bit_identical_to_the_original(training, explicit):
    xs, y = _inputs(n=40)
    present = _present(40)
    kwargs = {"confidence": "tcp", "modality_dropout": 0.0} if explicit else {}
    torch.manual_seed(3)
    module = MMDynamicsModule([6, 4], [5, 3], n_classes=3, class_weights=[1.0, 2.0, 0.5],
                              **kwargs).train(training)
    torch.manual_seed(7)
    out = module(xs, present)
    loss, parts = module.loss(out, y, present)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters()}
    module.zero_grad()
    torch.manual_seed(7)
    expected = _original_forward(module, xs, present)
    expected_loss, expected_parts = _original_loss(module, expected, y, present)
    expected_loss.backward()
    for key in ("fused_logits", "latent", "weights"):
        assert torch.equal(out[key], expected[key]), key
    for m in range(2):
        assert torch.equal(out["confidence"][m], expected["confidence"][m])
        assert torch.equal(out["tcp_hat"][m], expected["confidence"][m])
    assert torch.equal(loss, expected_loss)
    assert all(torch.equal(parts[k], expected_parts[k]) for k in parts)
    assert all(torch.equal(grads[n], p.grad) for n, p in module.named_parameters())


# --- "tcp_calibrated" and "pdf": detached regression ----------------------------------------


@pytest.mark.parametrize("confidence", ["tcp_calibrated", "pdf"])
def test_confidence_loss_trains_the_head_only(confidence):
    xs, y = _inputs()
    present = _present()
    module = _module(confidence)
    out = module(xs, present)
    _, parts = module.loss(out, y, present)
    parts["confidence"].backward()
    for name, param in module.named_parameters():
        if ".confidence." in name:
            assert param.grad is not None and torch.isfinite(param.grad).all()
        else:  # encoder, gate, classifiers: no gradient (input and target detached)
            assert param.grad is None or torch.all(param.grad == 0), name
    assert module.branches[0].confidence.linear.weight.grad.abs().sum() > 0
    # The fusion weights are detached too: the fused loss does not train the head.
    assert not out["weights"].requires_grad


@pytest.mark.parametrize("confidence", ["tcp_calibrated", "pdf"])
def test_regression_target_is_the_detached_tcp(confidence):
    xs, y = _inputs()
    present = torch.ones(12, 2)
    module = _module(confidence)
    out = module(xs, present)
    _, parts = module.loss(out, y, present)
    expected = 0.0
    for m in range(2):
        tcp = F.softmax(out["modality_logits"][m], 1).gather(1, y[:, None]).squeeze(1)
        error = out["tcp_hat"][m] - tcp.detach()
        expected = expected + error.abs().mean()
    torch.testing.assert_close(parts["confidence"], expected)


# --- "energy" and "pdf": the published formulas ----------------------------------------------


def test_energy_weights_are_a_softmax_of_minus_energy():
    logits = [torch.randn(5, 3), torch.randn(5, 3) * 3]
    available = torch.tensor([[1, 1], [1, 0], [0, 1], [0, 0], [1, 1]], dtype=torch.float32)
    weights = energy_weights(logits, available)
    torch.testing.assert_close(energy_score(logits[0]), -torch.logsumexp(logits[0], 1))
    free = torch.stack([torch.logsumexp(lg, 1) for lg in logits], 1)
    torch.testing.assert_close(weights[0], torch.softmax(free[0], 0))
    torch.testing.assert_close(weights[1:4], torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))


def test_holo_confidence_and_relative_calibration_match_the_official_two_modality_code():
    g = torch.Generator().manual_seed(0)
    mono = torch.rand(20, 2, generator=g) * 0.98 + 0.01
    both = torch.ones(20, 2)
    log_product = torch.log(mono[:, 0] * mono[:, 1])
    holo = holo_confidence(mono, both)
    torch.testing.assert_close(holo[:, 0], torch.log(mono[:, 1]) / log_product)
    torch.testing.assert_close(holo[:, 1], torch.log(mono[:, 0]) / log_product)
    # A cell's only modality has no holo-confidence.
    assert torch.all(holo_confidence(mono, torch.tensor([[1.0, 0.0]]).expand(20, 2)) == 0)
    du = torch.rand(20, 2, generator=g) + 0.01
    rc = relative_calibration(du, both)
    first_larger = du[:, 0] > du[:, 1]
    official_0 = torch.where(first_larger, torch.ones(20), du[:, 0] / du[:, 1])
    official_1 = torch.where(first_larger, du[:, 1] / du[:, 0], torch.ones(20))
    torch.testing.assert_close(rc, torch.stack([official_0, official_1], 1))


def test_pdf_calibrates_in_eval_only():
    g = torch.Generator().manual_seed(1)
    mono = torch.rand(8, 3, generator=g)
    logits = [torch.randn(8, 4, generator=g) * s for s in (0.1, 1.0, 3.0)]
    available = torch.ones(8, 3)
    available[0, 2] = 0
    co_belief = mono + holo_confidence(mono, available)
    expected = torch.softmax(co_belief.masked_fill(available == 0, -math.inf), 1)
    torch.testing.assert_close(pdf_weights(mono, logits, available, calibrate=False), expected)
    calibrated = pdf_weights(mono, logits, available, calibrate=True)
    assert not torch.allclose(calibrated, expected)
    torch.testing.assert_close(calibrated.sum(1), torch.ones(8))
    assert calibrated[0, 2] == 0


# --- modality dropout -------------------------------------------------------------------------


@pytest.mark.parametrize("confidence", CONFIDENCE_OPTIONS)
def test_no_modality_dropout_draws_no_random_numbers(confidence):
    xs, _ = _inputs()
    present = _present()
    # Without nn.Dropout, a train-mode forward leaves the random state as it was.
    module = _module(confidence, dropout=0.0).train()
    state = torch.random.get_rng_state()
    module(xs, present)
    assert torch.equal(state, torch.random.get_rng_state())
    # With nn.Dropout, the stream is the same as for a module built without the option.
    torch.manual_seed(1)
    plain = MMDynamicsModule([6, 4], [5, 3], n_classes=3, confidence=confidence)  # no option
    with_option = _module(confidence, seed=1, modality_dropout=0.0)
    torch.manual_seed(11)
    out_plain = plain(xs, present)
    state_plain = torch.random.get_rng_state()
    torch.manual_seed(11)
    out_option = with_option(xs, present)
    assert torch.equal(state_plain, torch.random.get_rng_state())
    assert torch.equal(out_plain["fused_logits"], out_option["fused_logits"])


def test_fusion_mask_keeps_at_least_one_present_modality():
    torch.manual_seed(0)
    present = (torch.rand(400, 3) < 0.7).float()
    present[:50] = torch.tensor([1.0, 0.0, 1.0])
    present[50:60] = 0
    for rate in (0.3, 0.999):
        kept = sample_fusion_mask(present, rate)
        assert torch.all(kept <= present)
        has_any = present.sum(1) > 0
        assert torch.all(kept.sum(1)[has_any] >= 1) and torch.all(kept[~has_any] == 0)
    # At a rate near 1, exactly one modality is kept, one of those the cell has.
    assert torch.all(kept.sum(1)[has_any] == 1)
    assert torch.all(kept[:50, 1] == 0) and kept[:50, 0].sum() > 0 and kept[:50, 2].sum() > 0


@pytest.mark.parametrize("confidence", CONFIDENCE_OPTIONS)
def test_modality_dropout_in_training_only(confidence):
    torch.manual_seed(0)
    xs, y = _inputs(n=300, dims=(6, 4, 5))
    present = torch.ones(300, 3)
    present[:100, 2] = 0
    torch.manual_seed(2)
    module = MMDynamicsModule([6, 4, 5], [5, 3, 4], 3, dropout=0.0, confidence=confidence,
                              modality_dropout=0.5)
    reference = MMDynamicsModule([6, 4, 5], [5, 3, 4], 3, dropout=0.0, confidence=confidence,
                                 modality_dropout=0.0)
    reference.load_state_dict(module.state_dict())
    torch.manual_seed(5)
    out = module.train()(xs, present)
    torch.manual_seed(5)  # without nn.Dropout, the fusion mask is the only draw
    kept = sample_fusion_mask(present, 0.5)
    assert torch.all(kept.sum(1) >= 1)  # never all of a cell's modalities
    dropped = (present > 0) & (kept == 0)
    assert 0.2 < dropped.sum() / present.sum() < 0.6
    assert torch.all(out["weights"][kept == 0] == 0)
    if confidence in NORMALISED:
        assert torch.all(out["weights"][kept > 0] > 0)
        torch.testing.assert_close(out["weights"].sum(1), torch.ones(300))
    else:  # the confidence, masked
        torch.testing.assert_close(out["weights"], torch.stack(out["confidence"], 1) * kept)
    # The modality losses still use the true presence.
    _, parts = module.loss(out, y, present)
    _, reference_parts = reference.loss(reference.train()(xs, present), y, present)
    for key in ("sparsity", "confidence", "modality"):
        torch.testing.assert_close(parts[key], reference_parts[key])
    # Evaluation: nothing dropped, same as without the option.
    eval_out = module.eval()(xs, present)
    reference_out = reference.eval()(xs, present)
    assert torch.equal(eval_out["weights"], reference_out["weights"])
    assert torch.equal(eval_out["fused_logits"], reference_out["fused_logits"])


# --- a toy problem: the informative modality gets the confidence -----------------------------


def _toy(n, seed):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    signal = F.one_hot(y, 3).float().repeat(1, 2) * 2.0
    informative = signal + torch.randn(n, 6, generator=g)
    noise = torch.randn(n, 4, generator=g)
    return [informative, noise], y


@pytest.mark.parametrize("confidence", ["tcp_calibrated", "pdf", "energy"])
def test_informative_modality_gets_more_confidence(confidence):
    xs, y = _toy(300, seed=0)
    held_out, _ = _toy(300, seed=1)
    present = torch.ones(300, 2)
    torch.manual_seed(0)
    module = MMDynamicsModule([6, 4], [8, 8], 3, dropout=0.2, confidence=confidence,
                              modality_dropout=0.2)
    optimiser = torch.optim.Adam(module.parameters(), lr=1e-2)
    for _ in range(200):
        optimiser.zero_grad()
        loss, _ = module.loss(module(xs, present), y, present)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        out = module.eval()(held_out, present)
    if module.predicts_tcp:
        assert out["tcp_hat"][0].mean() > out["tcp_hat"][1].mean() + 0.2
    assert out["weights"][:, 0].mean() > out["weights"][:, 1].mean()
