"""The "Where results are stored" table (README, included by docs/api.md) lists what tl writes."""

from __future__ import annotations

import re
from pathlib import Path

import mmdyn_sc as ms
from mmdyn_sc._keys import Key

ROOT = Path(__file__).parents[1]
START = "<!-- where-results-are-stored:start"
END = "<!-- where-results-are-stored:end -->"
#: Rows of the table written only for image modalities (no image in this test's fit).
IMAGE_ONLY = {("mod.obsm", Key.obsm.heatmap()), ("mod.obsm", Key.obsm.image_attribution())}
IMAGE_ONLY_FIELDS = {"images"}
#: Written only by a transductive fit (checked by its own fit below).
TRANSDUCTIVE_ONLY = {("obs", Key.obs.training_label())}
TRANSDUCTIVE_ONLY_FIELDS = {"transductive"}
TINY = {"max_epochs": 2, "n_hidden": 16, "enable_progress_bar": False}

#: ``mdata.obs["x"]`` -> ("obs", "x"); ``mdata[mod].varm["x"]`` -> ("mod.varm", "x").
ROW_KEY = re.compile(
    r'^`mdata(?P<mod>\[\w+\])?\.(?P<where>obs|obsm|var|varm|uns)\["(?P<name>\w+)"\]`$'
)


def table() -> tuple[set[tuple[str, str]], set[str]]:
    """The keys listed in the README's table, and the fields of ``uns["mmdyn"]`` it names."""
    text = (ROOT / "README.md").read_text()
    assert text.count(START) == 1 and text.count(END) == 1
    section = text[text.index(START):text.index(END)]
    keys, fields = set(), set()
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = ROW_KEY.match(cells[0]) if line.startswith("|") else None
        if match is None:
            continue
        where = ("mod." if match["mod"] else "") + match["where"]
        keys.add((where, match["name"]))
        if where == "uns":
            fields = set(re.findall(r"`([a-z_]+)`", " | ".join(cells[1:])))
    return keys, fields


def written(mdata, before) -> set[tuple[str, str]]:
    """Keys of ``mdata`` that are not in the snapshot ``before`` of the same object."""
    now = snapshot(mdata)
    return {key for key in now if key not in before}


def snapshot(mdata) -> set[tuple[str, str]]:
    keys = {("obs", c) for c in mdata.obs.columns} | {("obsm", k) for k in mdata.obsm}
    keys |= {("uns", k) for k in mdata.uns}
    for adata in mdata.mod.values():
        keys |= {("mod.var", c) for c in adata.var.columns}
        keys |= {("mod.varm", k) for k in adata.varm} | {("mod.obsm", k) for k in adata.obsm}
    return keys


def test_docs_include_the_readme_table():
    api = (ROOT / "docs" / "api.md").read_text()
    readme = (ROOT / "README.md").read_text()
    start_line = next(line for line in readme.splitlines() if line.startswith(START))
    assert "```{include} ../README.md" in api
    assert f":start-after: {start_line}\n" in api
    assert f":end-before: {END}\n" in api
    assert "| `mdata.obs[" not in api  # no second copy of the table


def test_table_lists_every_key_fit_and_predict_write(synth_batches):
    train, query = synth_batches
    listed, fields = table()

    before = snapshot(train)
    model = ms.tl.fit(train, "cell_type", confidence="tcp", **TINY)  # writes tcp_predicted
    fit_keys = written(train, before)
    model_fields = set(train.uns[Key.uns.params()])

    before = snapshot(query)
    ms.tl.predict(query, model, unknown_threshold=0.5)
    predict_keys = written(query, before)
    model_fields |= set(query.uns[Key.uns.params()])

    assert fit_keys - listed == set(), "written by tl.fit, missing from the README table"
    assert predict_keys - listed == set(), "written by tl.predict, missing from the table"
    assert listed - fit_keys - IMAGE_ONLY - TRANSDUCTIVE_ONLY == set(), (
        "in the table, not written by tl.fit")
    assert model_fields - fields == set(), "uns['mmdyn'] fields missing from the table"
    assert fields - model_fields - IMAGE_ONLY_FIELDS - TRANSDUCTIVE_ONLY_FIELDS == set(), (
        "uns fields not written")


def test_table_lists_what_a_transductive_fit_adds(synth_batches):
    import mudata as md

    train, query = synth_batches
    both = md.concat([train, query])
    both.obs["reference"] = both.obs["cell_type"].astype(object).where(
        both.obs["batch"] == "a", None)
    listed, fields = table()
    before = snapshot(both)
    ms.tl.fit(both, "reference", transductive=True, **TINY)
    added = written(both, before)
    assert TRANSDUCTIVE_ONLY <= added
    assert added - listed == set(), "written by a transductive fit, missing from the table"
    assert set(both.uns[Key.uns.params()]) - fields == set()
    assert "pseudo_labeled" in set(both.obs[Key.obs.split()])
