"""Property-based tests of input validation and alignment over small random MuData.

The data layer (:func:`~mmdyn_sc.model._setup.resolve_setup` and
:func:`~mmdyn_sc._data.align_mudata`) is tested directly, so that many random inputs stay fast;
one test runs :func:`mmdyn_sc.tl.fit` on a few of them.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from scipy import sparse

import mmdyn_sc as ms
from mmdyn_sc._data import LABELS_COLUMN, align_mudata
from mmdyn_sc._utils import mudata_options
from mmdyn_sc.model._setup import resolve_setup

LABELS_KEY = "cell_type"
CLASSES = ["a", "b", "c"]
MODALITY_NAMES = ["rna", "prot", "atac"]
#: Feature names are drawn from one pool, so modalities often share some (gene and protein).
FEATURE_POOL = [f"f{i}" for i in range(10)]
DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "float16", "float32", "float64",
          "bool"]
FORMATS = ["dense", "csr", "csc"]
ERRORS = (ValueError, KeyError, TypeError)

FAST_PROPERTIES = settings(max_examples=60, deadline=None,
                           suppress_health_check=[HealthCheck.too_slow])


@dataclass
class ModalitySpec:
    """One random modality: its cells (in stored order), features, values and storage."""

    cells: list[str]
    features: list[str]
    values: np.ndarray  # float64, cells x features, exactly representable in ``dtype``
    dtype: str
    fmt: str


@dataclass
class Case:
    """A random MuData as plain data: modalities and a label (or None) per cell name."""

    modalities: dict[str, ModalitySpec]
    labels: dict[str, str | None]
    seed: int


def _values(rng: np.random.Generator, shape: tuple[int, int], dtype: str) -> np.ndarray:
    if dtype == "bool":
        return rng.integers(0, 2, size=shape).astype(np.float64)
    low = 0 if dtype.startswith("uint") else -5
    values = rng.integers(low, 21, size=shape).astype(np.float64)
    if dtype.startswith("float"):
        values = values / 4.0  # quarters are exact in float16
    return values


@st.composite
def cases(draw, min_cells: int = 3, max_cells: int = 30) -> Case:
    """Small random MuData: 2-3 modalities, random cell subsets, orders, dtypes and labels."""
    n_cells = draw(st.integers(min_cells, max_cells))
    names = [f"c{i}" for i in range(n_cells)]
    n_modalities = draw(st.integers(2, 3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    modalities = {}
    for mod in MODALITY_NAMES[:n_modalities]:
        # Lists drawn with unique=True come in random order: cells and features are shuffled.
        cells = draw(st.lists(st.sampled_from(names), min_size=1, max_size=n_cells, unique=True))
        features = draw(st.lists(st.sampled_from(FEATURE_POOL), min_size=1, max_size=8,
                                 unique=True))
        dtype = draw(st.sampled_from(DTYPES))
        fmt = "dense" if dtype == "float16" else draw(st.sampled_from(FORMATS))
        modalities[mod] = ModalitySpec(cells, features, _values(rng, (len(cells), len(features)),
                                                                dtype), dtype, fmt)
    labels = draw(st.lists(st.sampled_from([*CLASSES, None]), min_size=n_cells,
                           max_size=n_cells))
    return Case(modalities, dict(zip(names, labels, strict=True)), seed)


def _matrix(values: np.ndarray, dtype: str, fmt: str):
    matrix = values.astype(dtype)
    if fmt == "csr":
        return sparse.csr_matrix(matrix)
    if fmt == "csc":
        return sparse.csc_matrix(matrix)
    return matrix


def _adata(spec: ModalitySpec) -> ad.AnnData:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anndata on duplicate names
        return ad.AnnData(X=_matrix(spec.values, spec.dtype, spec.fmt),
                          obs=pd.DataFrame(index=pd.Index(spec.cells, dtype=str)),
                          var=pd.DataFrame(index=pd.Index(spec.features, dtype=str)))


def _build(case: Case, adatas: dict[str, ad.AnnData] | None = None) -> md.MuData:
    adatas = adatas or {mod: _adata(spec) for mod, spec in case.modalities.items()}
    with mudata_options(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mudata on duplicate or shared names
        mdata = md.MuData(adatas)
    labels = pd.Series(case.labels, dtype=object)
    mdata.obs[LABELS_KEY] = labels.reindex(mdata.obs_names).to_numpy()
    return mdata


def _shuffled(case: Case, rng: np.random.Generator) -> Case:
    """The same data with cells and features of every modality stored in another order."""
    modalities = {}
    for mod, spec in case.modalities.items():
        rows = rng.permutation(len(spec.cells))
        cols = rng.permutation(len(spec.features))
        modalities[mod] = ModalitySpec([spec.cells[i] for i in rows],
                                       [spec.features[j] for j in cols],
                                       spec.values[np.ix_(rows, cols)], spec.dtype, spec.fmt)
    return Case(modalities, case.labels, case.seed)


def _digest(mdata: md.MuData) -> dict[str, str]:
    """Hash of every matrix, layer, name, obs/var table and uns key of ``mdata``."""

    def h(*parts) -> str:
        sha = hashlib.sha1()
        for part in parts:
            if isinstance(part, np.ndarray):
                sha.update(str((part.dtype, part.shape)).encode())
                part = (repr(part.tolist()).encode() if part.dtype == object
                        else np.ascontiguousarray(part).tobytes())
            sha.update(part if isinstance(part, bytes) else repr(part).encode())
        return sha.hexdigest()

    def matrix(x) -> str:
        if sparse.issparse(x):
            return h(x.format, x.shape, x.data, x.indices, x.indptr)
        return h(np.asarray(x))

    def frame(df: pd.DataFrame) -> str:
        return h(list(df.index), list(df.columns), [str(t) for t in df.dtypes],
                 df.astype(object).to_numpy())

    out = {"obs": frame(mdata.obs), "uns": h(sorted(mdata.uns.keys())),
           "mod": h(list(mdata.mod.keys())), "obsm": h(sorted(mdata.obsm.keys()))}
    for mod, adata in mdata.mod.items():
        out[f"{mod}.X"] = matrix(adata.X)
        out[f"{mod}.layers"] = h({k: matrix(v) for k, v in adata.layers.items()})
        out[f"{mod}.obs"] = frame(adata.obs)
        out[f"{mod}.var"] = frame(adata.var)
        out[f"{mod}.uns"] = h(sorted(adata.uns.keys()))
    return out


def _setup_and_align(mdata, labels_key=LABELS_KEY, modalities=None, layers=None,
                     features=None, classes=CLASSES, labels_required=False):
    """What MMDynamics.setup_mudata does to the data (query mode unless asked otherwise)."""
    resolved = resolve_setup(mdata, labels_key, modalities, layers, None, features, classes,
                             labels_required=labels_required)
    aligned = align_mudata(mdata, resolved["modalities"], resolved["layers"],
                           resolved["features"], resolved["label_codes"])
    return resolved, aligned


def _frame(aligned, mod: str) -> pd.DataFrame:
    x = aligned.mdata[mod].X
    x = x.toarray() if sparse.issparse(x) else np.asarray(x)
    return pd.DataFrame(x.astype(np.float64), index=aligned.mdata.obs_names,
                        columns=aligned.mdata[mod].var_names)


def _connected(case: Case, obs_names: pd.Index) -> bool:
    """Oracle: the modalities form one group when linked by shared cells."""
    cells = {mod: set(spec.cells) & set(obs_names) for mod, spec in case.modalities.items()}
    mods = list(cells)
    reached, frontier = {mods[0]}, [mods[0]]
    while frontier:
        current = frontier.pop()
        for other in mods:
            if other not in reached and cells[current] & cells[other]:
                reached.add(other)
                frontier.append(other)
    return len(reached) == len(mods)


# ---------------------------------------------------------------- (a) valid input
@FAST_PROPERTIES
@given(case=cases(), explicit_order=st.booleans())
def test_valid_input_is_aligned_by_name(case, explicit_order):
    mdata = _build(case)
    before = _digest(mdata)
    rng = np.random.default_rng(case.seed)
    features = None
    if explicit_order:
        features = {mod: list(rng.permutation(spec.features))
                    for mod, spec in case.modalities.items()}
    resolved, aligned = _setup_and_align(mdata, features=features)

    assert list(aligned.mdata.obs_names) == list(mdata.obs_names)
    assert sorted(mdata.obs_names) == sorted({c for s in case.modalities.values() for c in s.cells})
    for i, (mod, spec) in enumerate(case.modalities.items()):
        requested = spec.features if features is None else features[mod]
        assert resolved["features"][mod] == requested
        assert list(aligned.mdata[mod].var_names) == requested
        np.testing.assert_array_equal(aligned.present[:, i], mdata.obs_names.isin(spec.cells))
        expected = (pd.DataFrame(spec.values, index=spec.cells, columns=spec.features)
                    .reindex(index=mdata.obs_names, columns=requested).fillna(0.0))
        pd.testing.assert_frame_equal(_frame(aligned, mod), expected, check_names=False)
        assert aligned.mdata[mod].X.dtype in (np.float32, np.float64)
    codes = aligned.mdata.obs[LABELS_COLUMN].to_numpy()
    expected_codes = [CLASSES.index(case.labels[c]) if case.labels[c] else -1
                      for c in mdata.obs_names]
    np.testing.assert_array_equal(codes, expected_codes)
    assert _digest(mdata) == before


# ---------------------------------------------------------------- (b) invariance
@FAST_PROPERTIES
@given(case=cases())
def test_alignment_ignores_storage_order(case):
    rng = np.random.default_rng(case.seed)
    features = {mod: list(rng.permutation(spec.features)) for mod, spec in case.modalities.items()}
    first, second = _build(case), _build(_shuffled(case, rng))
    _, one = _setup_and_align(first, features=features)
    _, other = _setup_and_align(second, features=features)
    order = sorted(first.obs_names)
    assert sorted(second.obs_names) == order
    for i, mod in enumerate(case.modalities):
        pd.testing.assert_frame_equal(_frame(one, mod).loc[order], _frame(other, mod).loc[order])
        present_one = pd.Series(one.present[:, i], index=first.obs_names).loc[order]
        present_other = pd.Series(other.present[:, i], index=second.obs_names).loc[order]
        pd.testing.assert_series_equal(present_one, present_other)
    labels_one = one.mdata.obs[LABELS_COLUMN].loc[order]
    pd.testing.assert_series_equal(labels_one, other.mdata.obs[LABELS_COLUMN].loc[order])


# ---------------------------------------------------------------- (c) invalid input
CORRUPTIONS = ["nan", "duplicate_cell", "duplicate_feature", "missing_feature",
               "unknown_modality", "unknown_layer", "unknown_labels_key", "non_numeric",
               "no_features", "no_cells"]


def _corrupt(case: Case, kind: str, mod: str, rng: np.random.Generator):
    """Return (mdata, setup arguments, expected error type, substrings of its message)."""
    spec = case.modalities[mod]
    adatas = {m: _adata(s) for m, s in case.modalities.items()}
    args = {}
    if kind == "nan":
        values = spec.values.copy()
        values[rng.integers(len(spec.cells)), rng.integers(len(spec.features))] = rng.choice(
            [np.nan, np.inf, -np.inf])
        dtype = spec.dtype if spec.dtype.startswith("float") else "float32"
        adatas[mod].X = _matrix(values, dtype, spec.fmt)
        expected = ValueError, [f"modality '{mod}'", "NaN or infinite"]
    elif kind == "duplicate_cell":  # one more row, named as an existing cell
        twin = spec.cells[int(rng.integers(len(spec.cells)))]
        extra = _values(rng, (1, len(spec.features)), spec.dtype)
        adatas[mod] = _adata(ModalitySpec([*spec.cells, twin], spec.features,
                                          np.vstack([spec.values, extra]), spec.dtype, spec.fmt))
        expected = ValueError, [f"Modality '{mod}'", "1 duplicate cell name", f"'{twin}'"]
    elif kind == "duplicate_feature":  # one more column, named as an existing feature
        twin = spec.features[int(rng.integers(len(spec.features)))]
        extra = _values(rng, (len(spec.cells), 1), spec.dtype)
        adatas[mod] = _adata(ModalitySpec(spec.cells, [*spec.features, twin],
                                          np.hstack([spec.values, extra]), spec.dtype, spec.fmt))
        expected = ValueError, [f"Modality '{mod}'", "1 duplicate feature name", f"'{twin}'"]
    elif kind == "missing_feature":
        args["features"] = {m: list(s.features) for m, s in case.modalities.items()}
        args["features"][mod].insert(int(rng.integers(len(spec.features) + 1)), "zz_absent")
        expected = KeyError, [f"modality '{mod}'", "lacks 1 of the model's features",
                              "'zz_absent'"]
    elif kind == "unknown_modality":
        args["modalities"] = [*case.modalities, "prots"]
        expected = KeyError, ["Modality 'prots' not found", "Did you mean 'prot'"]
    elif kind == "unknown_layer":
        args["layers"] = {mod: "count"}
        expected = KeyError, ["Layer 'count' not found", f"modality '{mod}'"]
    elif kind == "unknown_labels_key":
        args.update(labels_key="cell_tpye", classes=None, labels_required=True)
        expected = KeyError, ["'cell_tpye' not found", "Did you mean 'cell_type'"]
    elif kind == "non_numeric":
        adatas[mod].X = spec.values.astype(str) if rng.random() < 0.5 else spec.values.astype(
            object)
        expected = TypeError, [f"modality '{mod}'", "non-numeric dtype"]
    elif kind == "no_features":
        adatas[mod] = adatas[mod][:, []].copy()
        expected = ValueError, [f"Modality '{mod}'", "no features (0 variables)"]
    else:  # no_cells
        adatas[mod] = adatas[mod][[]].copy()
        expected = ValueError, [f"Modality '{mod}'", "no cells (0 observations)"]
    return _build(case, adatas), args, *expected


@pytest.mark.parametrize("kind", CORRUPTIONS)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(), data=st.data())
def test_invalid_input_raises_a_named_error(kind, case, data):
    mod = data.draw(st.sampled_from(list(case.modalities)), label="modality")
    mdata, args, error, fragments = _corrupt(case, kind, mod, np.random.default_rng(case.seed))
    if kind == "unknown_labels_key" and not _connected(case, mdata.obs_names):
        # Training data whose modalities share no cell is refused before labels are read.
        error, fragments = ValueError, ["share no cell"]
    before = _digest(mdata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ERRORS) as raised:
            _setup_and_align(mdata, **args)
    message = str(raised.value.args[0])
    assert type(raised.value) is error, f"{kind}: {raised.value!r}"
    for fragment in fragments:
        assert fragment in message, f"{kind}: {fragment!r} not in {message!r}"
    assert _digest(mdata) == before


# ---------------------------------------------------------------- training data
@FAST_PROPERTIES
@given(case=cases())
def test_training_setup_accepts_exactly_the_trainable_data(case):
    """Refused if the modalities share no cell, or fewer than two classes are labelled."""
    mdata = _build(case)
    before = _digest(mdata)
    labelled = {case.labels[c] for c in mdata.obs_names} - {None}
    connected = _connected(case, mdata.obs_names)
    event("modalities share no cell" if not connected
          else ["no labelled class", "one labelled class", "two or more classes"][
              min(len(labelled), 2)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not connected:
            with pytest.raises(ValueError, match="share no cell"):
                _setup_and_align(mdata, classes=None, labels_required=True)
        elif not labelled:
            with pytest.raises(ValueError, match=rf"Labels key '{LABELS_KEY}': all "
                                                 rf"{mdata.n_obs} cells are unlabeled"):
                _setup_and_align(mdata, classes=None, labels_required=True)
        elif len(labelled) < 2:
            with pytest.raises(ValueError, match="at least two are needed"):
                _setup_and_align(mdata, classes=None, labels_required=True)
        else:
            resolved, aligned = _setup_and_align(mdata, classes=None, labels_required=True)
            assert resolved["classes"] == sorted(labelled)
            assert aligned.present.any(axis=1).all()
    assert _digest(mdata) == before


# ---------------------------------------------------------------- end to end
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(min_cells=6, max_cells=24))
def test_fit_succeeds_or_explains(case):
    mdata = _build(case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = ms.tl.fit(mdata, LABELS_KEY, max_epochs=1, n_hidden=8,
                              enable_progress_bar=False)
        except ERRORS as error:
            message = str(error.args[0])
            event(f"fit refused: {type(error).__name__}")
            named = [*case.modalities, LABELS_KEY, f"{mdata.n_obs} cells"]
            assert any(name in message for name in named), message
            return
    event("fit trained")
    proba = mdata.obsm["mmdyn_proba"].to_numpy()
    assert proba.shape == (mdata.n_obs, len(model.classes_))
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
