"""The feature gate finds planted informative features (documented synthetic fixture)."""

import mmdyn_sc as ms


def test_planted_features_rank_top():
    mdata, truth = ms.datasets.synthetic(seed=0)
    ms.pp.prepare(mdata, kinds={"noise": "none"})
    ms.tl.fit(mdata, "cell_type", max_epochs=60, seed=0, enable_progress_bar=False)
    for mod, planted in truth["informative"].items():
        k = len(planted)
        scores = mdata[mod].var["mmdyn_informativeness"]
        top = set(scores.sort_values(ascending=False).index[:k])
        recall = len(top & set(planted)) / k
        assert recall >= 0.8, (mod, recall)
    # The pure-noise modality gets the lowest confidence.
    confidence = mdata.obsm["mmdyn_confidence"].mean()
    assert confidence.idxmin() == truth["noisy_modality"]
