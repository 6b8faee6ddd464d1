"""tl.fit seeds locally: the user's random state is the same before and after a fit, and a
seed still gives bit-identical results."""

import random

import numpy as np
import pytest
import torch

import mmdyn_sc as ms


@pytest.fixture(scope="module")
def prepared():
    mdata, _ = ms.datasets.synthetic(n_cells=200, n_classes=3, noise_modality=False, seed=2)
    ms.pp.prepare(mdata)
    return mdata


def _draws():
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_fit_leaves_the_users_random_state_as_it_was(prepared):
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    expected = _draws()

    mdata = prepared.copy()  # MuData.copy draws from Python's generator: before seeding
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    ms.tl.fit(mdata, "cell_type", max_epochs=2, n_hidden=8, seed=7,
              enable_progress_bar=False)
    assert _draws() == expected
    model = ms.tl.fit(mdata, "cell_type", max_epochs=2, n_hidden=8, seed=7,
                      enable_progress_bar=False)
    query = prepared.copy()
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    ms.tl.predict(query, model)
    assert _draws() == expected


def test_same_seed_gives_identical_fits_whatever_the_global_state(prepared):
    probas = []
    for global_seed in (0, 99):
        torch.manual_seed(global_seed)
        np.random.seed(global_seed)
        mdata = prepared.copy()
        ms.tl.fit(mdata, "cell_type", max_epochs=3, n_hidden=8, seed=5,
                  enable_progress_bar=False)
        probas.append(mdata.obsm["mmdyn_proba"].to_numpy())
    np.testing.assert_array_equal(probas[0], probas[1])
    other = prepared.copy()
    ms.tl.fit(other, "cell_type", max_epochs=3, n_hidden=8, seed=6, enable_progress_bar=False)
    assert not np.array_equal(other.obsm["mmdyn_proba"].to_numpy(), probas[0])
