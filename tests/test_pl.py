"""Plots: what is drawn equals what tl stored (one small synthetic fit for the whole module)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import anndata as ad  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import scanpy as sc  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.collections import PathCollection, PolyCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import PathPatch, Rectangle  # noqa: E402

import mmdyn_sc as ms  # noqa: E402
from mmdyn_sc._keys import SPLIT_VALIDATION, Key  # noqa: E402
from mmdyn_sc._names import safe_names  # noqa: E402

LABELS = "cell_type"


@pytest.fixture(scope="module")
def fitted(_synth_prepared):
    data = _synth_prepared[0].copy()
    model = ms.tl.fit(data, LABELS, max_epochs=4, n_hidden=32, enable_progress_bar=False,
                      confidence="tcp")  # predicted TCP: the calibration plot's error
    return data, model


@pytest.fixture
def mdata(fitted):
    """The fitted MuData (shared: tests that change it work on a copy)."""
    return fitted[0]


#: Plots return their Axes (scanpy's autoshow off) and every figure is closed after a test.
pytestmark = pytest.mark.usefixtures("plotting")


@pytest.fixture
def shown(monkeypatch) -> list:
    """Records each call of ``plt.show`` (by our plots and by scanpy's) instead of showing."""
    calls: list = []
    monkeypatch.setattr(plt, "show", lambda *args, **kwargs: calls.append(1))
    return calls


def tick_texts(labels) -> list[str]:
    return [t.get_text() for t in labels]


def bars(ax) -> list[Rectangle]:
    return [p for p in ax.patches if isinstance(p, Rectangle)]


# ---------------------------------------------------------------- feature_weights
def test_feature_weights_top_and_lowest(mdata):
    n_top = 7
    ax = ms.pl.feature_weights(mdata, "prot", n_top=n_top)
    scores = mdata["prot"].var[Key.var.informativeness()].dropna()
    ranked = scores.sort_values(ascending=False, kind="stable")
    expected = list(ranked.index[:n_top]) + list(ranked.index[-n_top:])
    drawn = bars(ax)
    assert len(drawn) == 2 * n_top
    # ticks from top to bottom of the chart: first the highest, last the lowest feature
    ticks = sorted(zip(ax.get_yticks(), tick_texts(ax.get_yticklabels()), strict=True))
    top_to_bottom = [t for _, t in ticks] if ax.yaxis_inverted() else [t for _, t in ticks[::-1]]
    assert top_to_bottom == expected
    widths = {round(b.get_y() + b.get_height() / 2): b.get_width() for b in drawn}
    for y, name in ticks:
        assert widths[round(y)] == pytest.approx(scores[name])
    assert max(b.get_width() for b in drawn) == pytest.approx(ranked.iloc[0])
    assert min(b.get_width() for b in drawn) == pytest.approx(ranked.iloc[-1])


def test_feature_weights_top_only_is_the_previous_plot(mdata):
    fig = ms.pl.feature_weights(mdata, "rna", return_fig=True, include_lowest=False)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    ranked = mdata["rna"].var[Key.var.informativeness()].sort_values(ascending=False,
                                                                     kind="stable")
    assert len(bars(ax)) == 20
    labels = [t for _, t in sorted(zip(ax.get_yticks(), tick_texts(ax.get_yticklabels()),
                                       strict=True))]
    assert labels == list(ranked.index[:20])


def test_feature_weights_per_class_heatmap(mdata):
    n_top = 3
    frame = mdata["prot"].varm[Key.varm.feature_weights()]
    expected_rows: list[str] = []
    for cls in frame.columns:
        for feature in frame[cls].dropna().nlargest(n_top).index:
            if feature not in expected_rows:
                expected_rows.append(feature)
    ax = ms.pl.feature_weights(mdata, "prot", groupby="class", n_top=n_top)
    image = ax.images[0].get_array()
    assert image.shape == (len(expected_rows), frame.shape[1])
    assert tick_texts(ax.get_yticklabels()) == expected_rows
    classes = [str(c) for c in mdata.uns["mmdyn"]["classes"]]
    assert list(frame.columns) == safe_names(classes)
    assert tick_texts(ax.get_xticklabels()) == classes
    stored = frame.loc[expected_rows].to_numpy(dtype=float)
    np.testing.assert_array_equal(np.ma.getmaskarray(image), np.isnan(stored))
    np.testing.assert_allclose(np.ma.filled(image, np.nan), stored)
    # every class's own top features are among the rows
    for cls in frame.columns:
        assert set(frame[cls].dropna().nlargest(n_top).index) <= set(expected_rows)


@pytest.mark.parametrize("groupby", [Key.obs.prediction(), LABELS, "classes"])
def test_feature_weights_per_class_aliases(mdata, groupby):
    ax = ms.pl.feature_weights(mdata, "prot", groupby=groupby, n_top=2)
    assert ax.images[0].get_array().shape[1] == len(mdata.uns["mmdyn"]["classes"])


def test_feature_weights_errors(mdata):
    with pytest.raises(ValueError, match="per predicted class"):
        ms.pl.feature_weights(mdata, "prot", groupby="batch")
    with pytest.raises(KeyError, match="Modality 'protein' not in"):
        ms.pl.feature_weights(mdata, "protein")
    broken = mdata.copy()
    del broken["prot"].varm[Key.varm.feature_weights()]
    del broken["prot"].var[Key.var.informativeness()]
    with pytest.raises(KeyError, match=r"varm\['mmdyn_feature_weights'\] not found.*tl\.fit"):
        ms.pl.feature_weights(broken, "prot", groupby="class")
    with pytest.raises(KeyError, match=r"var\['mmdyn_informativeness'\] not found.*tl\.fit"):
        ms.pl.feature_weights(broken, "prot")


# ---------------------------------------------------------------- modality_confidence
def box_medians(ax) -> list[float]:
    return sorted(round(float(line.get_ydata()[0]), 10) for line in ax.lines
                  if (line.get_gid() or "").startswith("median:"))


def test_modality_confidence_boxes(mdata):
    confidence = mdata.obsm[Key.obsm.confidence()]
    groups = list(mdata.obs[LABELS].cat.categories)
    ax = ms.pl.modality_confidence(mdata, groupby=LABELS)
    boxes = [p for p in ax.patches if isinstance(p, PathPatch)]
    assert len(boxes) == len(groups) * confidence.shape[1]
    assert tick_texts(ax.get_xticklabels()) == groups
    assert tick_texts(ax.get_legend().get_texts()) == list(confidence.columns)
    # one colour per modality
    assert len({tuple(b.get_facecolor()) for b in boxes}) == confidence.shape[1]
    expected = sorted(
        round(float(np.median(confidence.loc[(mdata.obs[LABELS] == g).to_numpy(), mod])), 10)
        for g in groups for mod in confidence.columns
    )
    assert box_medians(ax) == pytest.approx(expected)


def test_modality_confidence_skips_absent_modality(mdata):
    data = mdata.copy()
    confidence = data.obsm[Key.obsm.confidence()].copy()
    group = data.obs[LABELS].cat.categories[0]
    in_group = (data.obs[LABELS] == group).to_numpy()
    confidence.loc[in_group, "prot"] = np.nan  # those cells lack the protein modality
    confidence.iloc[np.flatnonzero(~in_group)[:5], 0] = np.nan
    data.obsm[Key.obsm.confidence()] = confidence
    ax = ms.pl.modality_confidence(data, groupby=LABELS)
    n_groups = len(data.obs[LABELS].cat.categories)
    assert len([p for p in ax.patches if isinstance(p, PathPatch)]) == 2 * n_groups - 1
    medians = box_medians(ax)
    assert not np.isnan(medians).any()
    assert len(medians) == 2 * n_groups - 1


def test_modality_confidence_violins(mdata):
    """Grouped by the prediction when no ``groupby`` is given."""
    groupby = Key.obs.prediction()
    n_groups = mdata.obs[groupby].nunique()
    ax = ms.pl.modality_confidence(mdata, kind="violin", modalities=["rna"])
    assert ax.get_xlabel() == groupby
    bodies = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bodies) == n_groups
    assert tick_texts(ax.get_legend().get_texts()) == ["rna"]


def test_modality_confidence_errors(mdata):
    with pytest.raises(KeyError, match="obs\\['nope'\\] not found"):
        ms.pl.modality_confidence(mdata, groupby="nope")
    with pytest.raises(KeyError, match="obsm\\['other_confidence'\\] not found.*tl\\.fit"):
        ms.pl.modality_confidence(mdata, groupby=LABELS, key="other")
    with pytest.raises(ValueError, match="kind"):
        ms.pl.modality_confidence(mdata, groupby=LABELS, kind="bar")


# ---------------------------------------------------------------- tcp_calibration
def test_tcp_calibration_panels(mdata):
    axes = ms.pl.tcp_calibration(mdata)
    modalities = list(mdata.obsm[Key.obsm.confidence()].columns)
    assert isinstance(axes, list) and len(axes) == len(modalities)
    cells = (mdata.obs[Key.obs.split()] == SPLIT_VALIDATION).to_numpy()
    assert cells.any()
    for ax, mod in zip(axes, modalities, strict=True):
        true = mdata.obsm[Key.obsm.tcp_true()].loc[cells, mod].to_numpy()
        predicted = mdata.obsm[Key.obsm.confidence()].loc[cells, mod].to_numpy()
        points = [c for c in ax.collections if isinstance(c, PathCollection)][0].get_offsets()
        np.testing.assert_allclose(points, np.column_stack([true, predicted]))
        diagonal = [line for line in ax.lines
                    if np.array_equal(line.get_xdata(), line.get_ydata())]
        assert len(diagonal) == 1
        assert ax.get_title().startswith(mod)
        shown = float(re.search(r"relative error ([0-9.]+)", ax.get_title()).group(1))
        expected = np.mean(np.abs(predicted - true)) / np.mean(true)
        assert shown == pytest.approx(expected, abs=5e-4)


def test_tcp_calibration_one_modality_and_splits(mdata):
    ax = ms.pl.tcp_calibration(mdata, modality="prot", split=None)
    assert isinstance(ax, Axes)
    n_labelled = int(mdata.obsm[Key.obsm.tcp_true()]["prot"].notna().sum())
    points = [c for c in ax.collections if isinstance(c, PathCollection)][0].get_offsets()
    assert len(points) == n_labelled
    with pytest.raises(ValueError, match=r"No cells with .*'query'.*'train': \d+"):
        ms.pl.tcp_calibration(mdata, split="query")
    with pytest.raises(KeyError, match="Modality 'adt'"):
        ms.pl.tcp_calibration(mdata, modality="adt")
    broken = mdata.copy()
    del broken.obsm[Key.obsm.tcp_true()]
    with pytest.raises(KeyError, match=r"obsm\['mmdyn_tcp_true'\] not found.*tl\.fit"):
        ms.pl.tcp_calibration(broken)


def test_tcp_calibration_draws_the_modality_certainty(mdata):
    axes = ms.pl.tcp_calibration(mdata, values="certainty", split=None)
    certainty = mdata.obsm[Key.obsm.modality_certainty()]
    true = mdata.obsm[Key.obsm.tcp_true()]
    for ax, mod in zip(axes, certainty.columns, strict=True):
        both = (true[mod].notna() & certainty[mod].notna()).to_numpy()
        points = [c for c in ax.collections if isinstance(c, PathCollection)][0].get_offsets()
        np.testing.assert_allclose(points, np.column_stack([true[mod].to_numpy()[both],
                                                           certainty[mod].to_numpy()[both]]))
        assert "certainty" in ax.get_ylabel()
        assert "relative error" not in ax.get_title()  # no TCP prediction drawn
        shown = float(re.search(r"Spearman (-?[0-9.]+)", ax.get_title()).group(1))
        expected = pd.Series(true[mod].to_numpy()[both]).corr(
            pd.Series(certainty[mod].to_numpy()[both]), method="spearman")
        assert shown == pytest.approx(expected, abs=5e-3)
    with pytest.raises(ValueError, match="values must be 'confidence' or 'certainty'"):
        ms.pl.tcp_calibration(mdata, values="tcp")


# ---------------------------------------------------------------- training_history
def test_training_history_from_mudata(mdata):
    history = mdata.uns["mmdyn"]["history"]
    ax = ms.pl.training_history(mdata)
    assert [line.get_label() for line in ax.lines] == ["train_loss", "validation_loss"]
    for line in ax.lines:
        np.testing.assert_allclose(line.get_ydata(), history[line.get_label()])
        np.testing.assert_array_equal(line.get_xdata(), np.arange(1, 5))


def test_training_history_from_model_with_scores(fitted):
    mdata, model = fitted
    axes = ms.pl.training_history(model, scores=True)
    assert isinstance(axes, list) and len(axes) == 2
    assert [line.get_label() for line in axes[1].lines] == [
        "validation_accuracy", "validation_f1_macro"]
    for ax in axes:
        for line in ax.lines:
            np.testing.assert_allclose(line.get_ydata(),
                                       mdata.uns["mmdyn"]["history"][line.get_label()])


def test_training_history_duck_typed_model():
    frames = {"train_loss": pd.DataFrame({"train_loss": [3.0, 2.0, 1.5]}),
              "train_accuracy": pd.DataFrame({"train_accuracy": [0.2, 0.5, 0.7]})}
    trained = SimpleNamespace(history=frames)
    ax = ms.pl.training_history(trained)
    assert [line.get_label() for line in ax.lines] == ["train_loss"]
    with pytest.warns(UserWarning, match="no validation"):
        ax = ms.pl.training_history(trained, scores=True)
    assert isinstance(ax, Axes)
    axes = ms.pl.training_history(trained, scores=["train_accuracy"])
    np.testing.assert_allclose(axes[1].lines[0].get_ydata(), [0.2, 0.5, 0.7])
    with pytest.raises(TypeError, match="history"):
        ms.pl.training_history(object())
    with pytest.raises(KeyError, match="train it first"):
        ms.pl.training_history(SimpleNamespace(history=None))
    with pytest.raises(KeyError, match=r"uns\['other'\] not found.*tl\.fit"):
        ms.pl.training_history(ms.datasets.synthetic(n_cells=20)[0], key="other")


# ---------------------------------------------------------------- confusion
def test_confusion_matrix(mdata):
    ax = ms.pl.confusion(mdata, LABELS)
    matrix = ax.images[0].get_array()
    classes = [str(c) for c in mdata.uns["mmdyn"]["classes"]]
    assert matrix.shape == (len(classes), len(classes))
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0)
    assert tick_texts(ax.get_yticklabels()) == classes
    assert tick_texts(ax.get_xticklabels()) == classes
    expected = pd.crosstab(mdata.obs[LABELS].astype(str),
                           mdata.obs[Key.obs.prediction()].astype(str), normalize="index")
    expected = expected.reindex(index=classes, columns=classes, fill_value=0.0)
    np.testing.assert_allclose(matrix, expected.to_numpy())
    # small matrix: every non-zero value is written in its cell
    assert len(ax.texts) == int((expected.to_numpy() > 0).sum())


def test_confusion_counts_and_split(mdata):
    """Without ``labels_key``, the fit's labels column."""
    assert mdata.uns["mmdyn"]["labels_key"] == LABELS
    ax = ms.pl.confusion(mdata, normalize=False, split=SPLIT_VALIDATION)
    assert ax.get_ylabel() == f"true ({LABELS})"
    matrix = np.asarray(ax.images[0].get_array())
    cells = mdata.obs[Key.obs.split()] == SPLIT_VALIDATION
    assert matrix.sum() == cells.sum()
    counts = mdata.obs.loc[cells, LABELS].value_counts()
    rows = tick_texts(ax.get_yticklabels())
    np.testing.assert_array_equal(matrix.sum(axis=1), counts[rows].to_numpy())


def test_confusion_errors(mdata):
    with pytest.raises(KeyError, match="obs\\['celltype'\\] not found"):
        ms.pl.confusion(mdata, "celltype")
    broken = mdata.copy()
    del broken.obs[Key.obs.prediction()]
    with pytest.raises(KeyError, match=r"obs\['mmdyn_prediction'\] not found.*tl\.fit"):
        ms.pl.confusion(broken, LABELS)
    unlabelled = mdata.copy()
    del unlabelled.obs[LABELS]
    with pytest.raises(KeyError, match=f"fit's labels column '{LABELS}' is not in mdata.obs"):
        ms.pl.confusion(unlabelled)


# ---------------------------------------------------------------- conventions
PLOTS = {
    "feature_weights": lambda m, **kw: ms.pl.feature_weights(m, "prot", n_top=5, **kw),
    "feature_weights_class": lambda m, **kw: ms.pl.feature_weights(
        m, "prot", groupby="class", n_top=2, **kw),
    "modality_confidence": lambda m, **kw: ms.pl.modality_confidence(m, groupby=LABELS, **kw),
    "tcp_calibration": lambda m, **kw: ms.pl.tcp_calibration(m, modality="rna", **kw),
    "training_history": lambda m, **kw: ms.pl.training_history(m, **kw),
    "confusion": lambda m, **kw: ms.pl.confusion(m, LABELS, **kw),
}


@pytest.mark.parametrize("name", list(PLOTS))
def test_ax_show_return_fig(mdata, name, shown):
    plot = PLOTS[name]
    fig, ax = plt.subplots()
    assert plot(mdata, ax=ax) is ax  # autoshow off (fixture): the Axes
    assert plot(mdata, ax=ax, return_fig=True) is fig
    assert isinstance(plot(mdata, show=False), Axes)
    assert isinstance(plot(mdata, return_fig=True), Figure)
    assert isinstance(plot(mdata, return_fig=True, show=True), Figure)  # returned, not shown
    assert not shown
    assert plot(mdata, show=True) is None
    assert len(shown) == 1


@pytest.mark.parametrize("name", list(PLOTS))
def test_show_none_follows_scanpy_autoshow(mdata, name, shown):
    plot = PLOTS[name]
    sc.settings.autoshow = True
    assert plot(mdata) is None
    assert len(shown) == 1
    fig, ax = plt.subplots()
    assert plot(mdata, ax=ax) is None  # as in scanpy, also into a given Axes
    assert plot(mdata, ax=ax, show=False) is ax
    assert len(shown) == 2


def outcome(value, shown: list) -> tuple[str, bool]:
    kind = ("none" if value is None else "figure" if isinstance(value, Figure)
            else "axes" if isinstance(value, Axes) else type(value).__name__)
    return kind, bool(shown and shown.pop())


@pytest.mark.parametrize("autoshow", [True, False])
@pytest.mark.parametrize("show", [None, True, False])
@pytest.mark.parametrize("return_fig", [False, True])
@pytest.mark.parametrize("given_ax", [False, True])
def test_show_return_fig_as_scanpy_embedding(mdata, shown, autoshow, show, return_fig,
                                             given_ax):
    """What is returned and whether the figure is shown, as :func:`scanpy.pl.embedding`."""
    sc.settings.autoshow = autoshow
    adata = ad.AnnData(np.zeros((3, 1), dtype=np.float32),
                       obsm={"X_umap": np.arange(6.0).reshape(3, 2)})
    options = {"show": show, "return_fig": return_fig}
    ours = outcome(ms.pl.training_history(mdata, ax=plt.subplots()[1] if given_ax else None,
                                          **options), shown)
    if given_ax and return_fig:  # scanpy 1.11 raises UnboundLocalError there
        assert ours == ("figure", False)
        return
    theirs = outcome(sc.pl.embedding(adata, "umap", ax=plt.subplots()[1] if given_ax else None,
                                     **options), shown)
    assert ours == theirs


@pytest.mark.parametrize("name", list(PLOTS))
def test_missing_fit_names_the_key_and_the_tool(mdata, name):
    with pytest.raises(KeyError, match=r"'other.*not found.*mmdyn_sc\.tl\.fit"):
        PLOTS[name](mdata, key="other")


def test_multi_panel_axes(mdata):
    fig, axes = plt.subplots(1, 2)
    assert ms.pl.tcp_calibration(mdata, ax=axes) == list(axes)
    assert ms.pl.training_history(mdata, scores=True, ax=axes, return_fig=True) is fig
    with pytest.raises(ValueError, match="2 panel"):
        ms.pl.tcp_calibration(mdata, ax=axes[0])
