"""mmdyn_sc uses scvi-tools through its public API; the one thing it reads of scvi-tools'
internals, the save layout, is checked here so that an upgrade that changes it fails loudly."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import mmdyn_sc as ms
from mmdyn_sc import MMDynamics
from mmdyn_sc.model._saved_files import ATTR_KEYS, MODEL_FILE, SAVED_KEYS, read_saved_model

SRC = Path(ms.__file__).parent


def _scvi_imports():
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("scvi"):
                yield path, node.module, [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("scvi"):
                        yield path, alias.name, []


def test_no_private_scvi_tools_names_are_imported():
    private = [(str(p.relative_to(SRC)), module, names) for p, module, names in _scvi_imports()
               if any(part.startswith("_") for part in module.split("."))
               or any(n.startswith("_") for n in names)]
    assert not private


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    mdata, _ = ms.datasets.synthetic(n_cells=200, n_classes=3, noise_modality=False, seed=3)
    ms.pp.prepare(mdata)
    query = mdata[::3].copy()
    train = mdata[~mdata.obs_names.isin(query.obs_names)].copy()
    model = ms.tl.fit(train, "cell_type", max_epochs=2, n_hidden=8, enable_progress_bar=False)
    folder = tmp_path_factory.mktemp("model")
    model.save(str(folder), overwrite=True)
    return model, folder, query


def test_scvi_tools_save_layout_is_what_we_read(trained):
    """scvi-tools' BaseModelClass.save writes model.pt with the keys read_saved_model uses."""
    _, folder, _ = trained
    raw = torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=False)
    assert set(SAVED_KEYS) <= set(raw)
    assert set(ATTR_KEYS) <= set(raw["attr_dict"])
    assert {"non_kwargs", "kwargs"} <= set(raw["attr_dict"]["init_params_"])
    assert "setup_args" in raw["attr_dict"]["registry_"]
    saved = read_saved_model(folder)
    assert saved.init_options["confidence"] == "energy"
    assert saved.registry["model_name"] == "MMDynamics"


def test_load_accepts_scvi_tools_adata_keyword(trained):
    model, folder, query = trained
    expected = model.predict(query, soft=True)
    loaded = MMDynamics.load(str(folder), adata=query)
    np.testing.assert_allclose(loaded.predict(query, soft=True).to_numpy(), expected.to_numpy(),
                               atol=1e-6)
    with pytest.raises(ValueError, match="not both"):
        MMDynamics.load(str(folder), query, adata=query)
    with pytest.raises(ValueError, match="No saved model"):
        MMDynamics.load(str(folder / "nothing"), query)


def test_nothing_of_scvi_tools_is_written_into_the_users_object(trained):
    model, folder, query = trained
    before_uns = set(query.uns) | {k for m in query.mod.values() for k in m.uns}
    before_obs = set(query.obs.columns)
    MMDynamics.load(str(folder), query)
    for _ in range(3):
        model.predict(query)
    after_uns = set(query.uns) | {k for m in query.mod.values() for k in m.uns}
    assert after_uns == before_uns
    assert set(query.obs.columns) == before_obs
    # repeated predictions do not pile up registrations
    assert len(model._per_instance_manager_store[model.id]) == 1


#: The model-developer methods of scvi-tools' BaseModelClass that MMDynamics calls (scvi-tools'
#: own models call them too; they are underscored but its documented way to build a model),
#: with the parameters we pass. An upgrade that renames one fails here, not in a user's fit.
DEVELOPER_API = {
    "_validate_anndata": ("adata",),
    "_make_data_loader": ("adata", "batch_size", "shuffle"),
    "_check_if_trained": ("warn",),
    "_get_setup_method_args": (),
    "_get_init_params": ("locals",),
    "register_manager": ("adata_manager",),
    "deregister_manager": ("adata",),
    "get_anndata_manager": ("adata", "required"),
    "to_device": ("device",),
    "save": ("dir_path", "overwrite"),
}


@pytest.mark.parametrize("name", sorted(DEVELOPER_API))
def test_scvi_tools_developer_methods_we_call_exist(name):
    import inspect

    from scvi.model.base import BaseModelClass

    method = getattr(BaseModelClass, name, None)
    assert method is not None, f"scvi-tools' BaseModelClass has no {name} any more"
    parameters = inspect.signature(method).parameters
    missing = [p for p in DEVELOPER_API[name] if p not in parameters]
    assert not missing, f"BaseModelClass.{name} lost parameters {missing}"
