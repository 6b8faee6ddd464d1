"""Every key that mmdyn_sc stores in a MuData, named once.

``key_added`` (default ``"mmdyn"``) prefixes every per-fit key, so that several fits can live in
one object. Plots and tools import these names; nothing else spells them out.
"""

from __future__ import annotations

DEFAULT_KEY = "mmdyn"

#: Layer written by :func:`mmdyn_sc.pp.prepare` into every modality it normalises.
PREPARED_LAYER = "mmdyn_prepared"

#: The file :meth:`MMDynamics.save` (scvi-tools' save) writes into its folder.
MODEL_FILE = "model.pt"

#: Values of ``obs[f"{key}_split"]``.
SPLIT_TRAIN = "train"
SPLIT_VALIDATION = "validation"
SPLIT_UNLABELED = "unlabeled"
SPLIT_QUERY = "query"
#: Training cells held out for the confidence heads of ``"tcp_calibrated"``.
SPLIT_CALIBRATION = "calibration"
#: Unlabelled cells a transductive fit trained on with their pseudo-label.
SPLIT_PSEUDO_LABELED = "pseudo_labeled"
SPLIT_CATEGORIES = [SPLIT_TRAIN, SPLIT_VALIDATION, SPLIT_UNLABELED, SPLIT_QUERY,
                    SPLIT_CALIBRATION, SPLIT_PSEUDO_LABELED]


class Key:
    """Names of the entries written by :func:`mmdyn_sc.tl.fit` and :func:`mmdyn_sc.tl.predict`.

    One nested class per place in the MuData; each of their functions takes ``key``, the
    fit's ``key_added`` (default ``"mmdyn"``), and returns the name of one entry, e.g.
    ``mdata.obs[mmdyn_sc.Key.obs.prediction()]`` is ``mdata.obs["mmdyn_prediction"]``.
    """

    class obs:
        """Columns of ``mdata.obs``."""

        @staticmethod
        def prediction(key: str = DEFAULT_KEY) -> str:
            """Predicted class (categorical)."""
            return f"{key}_prediction"

        @staticmethod
        def certainty(key: str = DEFAULT_KEY) -> str:
            """Probability that the predicted class is right, calibrated on validation cells."""
            return f"{key}_certainty"

        @staticmethod
        def split(key: str = DEFAULT_KEY) -> str:
            """Role of the cell: train / validation / unlabeled / query (categorical)."""
            return f"{key}_split"

        @staticmethod
        def training_label(key: str = DEFAULT_KEY) -> str:
            """Transductive fits: the label each cell was trained on (categorical).

            The user's label, the pseudo-label of a confidently predicted unlabelled cell,
            or missing.
            """
            return f"{key}_training_label"

    class obsm:
        """Entries of ``mdata.obsm``."""

        @staticmethod
        def proba(key: str = DEFAULT_KEY) -> str:
            """Fused class probabilities, DataFrame cells x classes.

            Columns in the order of ``uns[key]["classes"]``, named by the classes with
            each ``"/"`` written as ``"_"`` (so that the h5mu file can be written).
            """
            return f"{key}_proba"

        @staticmethod
        def confidence(key: str = DEFAULT_KEY) -> str:
            """Weight given to each modality per cell, DataFrame cells x modalities."""
            return f"{key}_confidence"

        @staticmethod
        def tcp_predicted(key: str = DEFAULT_KEY) -> str:
            """Predicted TCP of each modality (cells x modalities), for options predicting it."""
            return f"{key}_tcp_predicted"

        @staticmethod
        def tcp_true(key: str = DEFAULT_KEY) -> str:
            """True class probability of each modality's classifier (cells x modalities)."""
            return f"{key}_tcp_true"

        @staticmethod
        def modality_certainty(key: str = DEFAULT_KEY) -> str:
            """Per cell and modality: probability that the modality's own classifier is right."""
            return f"{key}_modality_certainty"

        @staticmethod
        def latent(key: str = DEFAULT_KEY) -> str:
            """Fused latent representation, array cells x sum of hidden sizes."""
            return f"{key}_latent"

        @staticmethod
        def heatmap(key: str = DEFAULT_KEY) -> str:
            """In an image modality's ``.obsm``: patch gate per imaged cell (n, grid, grid)."""
            return f"{key}_heatmap"

        @staticmethod
        def image_attribution(key: str = DEFAULT_KEY) -> str:
            """In an image modality's ``.obsm``: patch attribution per imaged cell (n, grid, grid).

            Integrated gradients of the log probability of the cell's predicted class,
            summed over the pixels and channels of each patch (the same name as the tabular
            ``varm`` attribution, :meth:`Key.varm.attribution`).
            """
            return f"{key}_attribution"

    class varm:
        """Entries of each modality's ``.varm``."""

        @staticmethod
        def feature_weights(key: str = DEFAULT_KEY) -> str:
            """Mean gate value per feature and predicted class, DataFrame features x classes.

            Columns as in :meth:`Key.obsm.proba`.
            """
            return f"{key}_feature_weights"

        @staticmethod
        def attribution(key: str = DEFAULT_KEY) -> str:
            """Per-class attribution (the default explanation), DataFrame features x classes.

            Integrated gradients of the log probability of the predicted class, averaged
            per predicted class and credited to co-expressed features; see
            :meth:`mmdyn_sc.MMDynamics.get_attribution`. Columns as in :meth:`Key.obsm.proba`.
            """
            return f"{key}_attribution"

        @staticmethod
        def attribution_direct(key: str = DEFAULT_KEY) -> str:
            """The same per-class attribution without the credit to co-expressed features."""
            return f"{key}_attribution_direct"

    class var:
        """Columns of each modality's ``.var``."""

        @staticmethod
        def informativeness(key: str = DEFAULT_KEY) -> str:
            """Mean gate value per feature over all cells that have the modality."""
            return f"{key}_informativeness"

    class uns:
        """Entries of ``mdata.uns``."""

        @staticmethod
        def params(key: str = DEFAULT_KEY) -> str:
            """The documented result dictionary of a fit (see :func:`mmdyn_sc.tl.fit`)."""
            return key


#: The per-class feature tables of a fit (``varm``, features x classes) by their short name:
#: what ``tl.rank_features(values=)`` ranks and ``pl.attribution(values=)`` draws.
CLASS_TABLES = {"attribution": Key.varm.attribution,
                "attribution_direct": Key.varm.attribution_direct,
                "feature_weights": Key.varm.feature_weights}
