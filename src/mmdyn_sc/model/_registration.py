"""Registering a MuData with scvi-tools on a private aligned copy, never on the user's object.

scvi-tools' own ``setup_mudata`` writes a UUID into ``mdata.uns`` to find the registration
again. :class:`~mmdyn_sc.MMDynamics` promises to write nothing into the user's object, so it
registers a private copy in which every modality is aligned to the global cells (with a
presence mask), and remembers which copy belongs to which object in :data:`ALIGNED_COPIES`.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence

import numpy as np
from mudata import MuData
from scvi.data import AnnDataManager, fields

from .._data import CALIBRATION_COLUMN, LABELS_COLUMN, AlignedData, presence_column
from .._data._images import ALIGNED_IMAGE_KEY
from . import _registry_keys as rk
from ._scvi_logging import quiet_scvi


class AlignedCopies:
    """The aligned copy of each set-up MuData, held as long as the MuData lives.

    Looked up by object identity (a MuData is not hashable), with a weak reference that
    checks the object is still the one set up; an entry is dropped when its MuData is
    garbage-collected (a model keeps its own reference to the copy).
    """

    def __init__(self):
        self._entries: dict[int, tuple[weakref.ref, AlignedData]] = {}

    def add(self, mdata: MuData, aligned: AlignedData) -> None:
        """Remember ``aligned`` as the copy of ``mdata`` (replacing an earlier setup)."""
        key = id(mdata)
        self._entries[key] = (weakref.ref(mdata), aligned)
        weakref.finalize(mdata, self._entries.pop, key, None)

    def forget(self, mdata: MuData) -> None:
        """Forget ``mdata``'s copy (set it up again to build another model)."""
        entry = self._entries.get(id(mdata))
        if entry is not None and entry[0]() is mdata:
            del self._entries[id(mdata)]

    def get(self, mdata: MuData) -> AlignedData | None:
        """The copy of ``mdata``, or ``None`` if ``mdata`` was not set up."""
        entry = self._entries.get(id(mdata))
        if entry is None or entry[0]() is not mdata:
            return None
        return entry[1]


#: Every MuData set up with :meth:`~mmdyn_sc.MMDynamics.setup_mudata` and its aligned copy.
ALIGNED_COPIES = AlignedCopies()


def model_fields(modalities: Sequence[str], images: Mapping[str, Mapping],
                 calibration: bool = True) -> list:
    """scvi-tools fields of the aligned copy: inputs and presence per modality, labels."""
    mod_fields = []
    for i, mod in enumerate(modalities):
        if mod in images:
            field = fields.MuDataObsmField(rk.modality_x(i), ALIGNED_IMAGE_KEY, mod_key=mod,
                                           is_count_data=False, mod_required=True)
        else:
            field = fields.MuDataLayerField(rk.modality_x(i), None, mod_key=mod,
                                            is_count_data=False, mod_required=True)
        mod_fields.append(field)
        mod_fields.append(fields.MuDataNumericalObsField(rk.modality_present(i),
                                                         presence_column(i)))
    mod_fields.append(fields.MuDataNumericalObsField(rk.LABELS, LABELS_COLUMN))
    if calibration:
        mod_fields.append(fields.MuDataNumericalObsField(rk.CALIBRATION, CALIBRATION_COLUMN))
    return mod_fields


def register_aligned(cls, aligned: AlignedData, setup_method_args: dict,
                     source_registry: dict | None, **kwargs) -> None:
    """Register the aligned copy's fields with scvi-tools under the model class ``cls``."""
    setup = setup_method_args["setup_args"]
    # Models saved before held-out calibration cells existed have no such field.
    calibration = (source_registry is None
                   or rk.CALIBRATION in source_registry.get("field_registries", {}))
    manager = AnnDataManager(
        fields=model_fields(setup["modalities"], setup["images"] or {}, calibration),
        setup_method_args=setup_method_args,
    )
    with quiet_scvi():  # "Generating sequential column names" for every image field
        if source_registry is not None:
            manager.register_fields(aligned.mdata, source_registry=source_registry, **kwargs)
        else:
            manager.register_fields(aligned.mdata, **kwargs)
    cls.register_manager(manager)


def loader_dtypes(manager: AnnDataManager, aligned: MuData, modalities: Sequence[str],
                  images: Mapping) -> dict:
    """Data loader dtypes: image modalities keep their stored dtype per minibatch.

    ``uint8`` or ``float32`` instead of scvi-tools' float32, so that the branch knows to
    divide 8-bit images by 255. Labels are int64 and everything else float32, as scvi-tools'
    loader gives them by default.
    """
    dtypes = {key: np.int64 if key == rk.LABELS else np.float32
              for key in manager.data_registry}
    for i, mod in enumerate(modalities):
        if mod in images:
            dtypes[rk.modality_x(i)] = aligned.mod[mod].obsm[ALIGNED_IMAGE_KEY].dtype.type
    return dtypes


def release_setup(model, mdata: MuData) -> None:
    """Leave ``model`` the only holder of the aligned copy that ``mdata``'s setup made.

    For a setup made inside :func:`mmdyn_sc.tl.fit` (the user never sees it): scvi-tools
    keeps every set-up copy in a class-wide store for the rest of the session, and
    :data:`ALIGNED_COPIES` keeps it while ``mdata`` lives, so every fit (and every extra fit
    of ``n_fits``) would keep a copy of the data after its model is gone. The model keeps its
    copy and manager itself (``model.adata``, ``model.adata_manager``); its per-instance
    store entry is dropped when the model is garbage-collected (:func:`drop_instance_store`).
    """
    type(model)._setup_adata_manager_store.pop(model.adata_manager.adata_uuid, None)
    ALIGNED_COPIES.forget(mdata)


def drop_instance_store(cls, model_id: str) -> None:
    """Forget scvi-tools' per-instance managers of a garbage-collected model."""
    cls._per_instance_manager_store.pop(model_id, None)


def forget_query(model, aligned: MuData) -> None:
    """Drop the registration scvi-tools made for a query's aligned copy.

    ``_validate_anndata`` transfers the setup to the copy and keeps the new manager in the
    model's instance store; repeated predictions would pile them up. scvi-tools' public
    ``deregister_manager`` looks the manager up in the class store, so it is put there first.
    """
    manager = model.get_anndata_manager(aligned, required=True)
    type(model).register_manager(manager)
    model.deregister_manager(aligned)
