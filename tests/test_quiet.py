"""A default fit is quiet: one progress bar on stderr, nothing on stdout, the session untouched."""

import logging
import sys
import warnings

import numpy as np
import pytest

import mmdyn_sc as ms
from mmdyn_sc.model._quiet import LIGHTNING_LOGGERS, quiet_training

#: What Lightning prints by default and a user of tl.fit should not see.
NOISE = ("GPU available", "TPU available", "HPU available", "litlogger", "💡", "Tip:",
         "LOCAL_RANK", "Trainable params", "| Name", "`Trainer.fit` stopped")


@pytest.fixture
def fresh_lightning_logging(capfd):
    """Lightning's loggers as in a fresh session (INFO, printing to stderr), restored after.

    The test configuration silences them (conftest.py) and pytest captures what reaches the
    root logger; here they print to the captured stderr, as in a user's session.
    """
    loggers = [logging.getLogger(name) for name in LIGHTNING_LOGGERS]
    saved = [(lg, lg.level, lg.propagate) for lg in loggers]
    handler = logging.StreamHandler(sys.stderr)
    for lg in loggers:
        lg.setLevel(logging.INFO)
        lg.propagate = False
        lg.addHandler(handler)
    yield
    for lg, level, propagate in saved:
        lg.removeHandler(handler)
        lg.setLevel(level)
        lg.propagate = propagate


def _levels() -> dict:
    names = ["", "scvi", "mmdyn_sc", *LIGHTNING_LOGGERS, "lightning"]
    return {name: logging.getLogger(name).level for name in names}


def test_default_fit_is_quiet_and_warns_at_the_users_line(fresh_lightning_logging, capfd):
    mdata, _ = ms.datasets.synthetic(n_cells=200)
    # One class with a single labelled cell: the fit warns, and the warning must name this file.
    labels = mdata.obs["cell_type"].astype(object).copy()
    members = np.flatnonzero(labels.to_numpy() == "type_1")
    labels.iloc[members[1:]] = np.nan
    mdata.obs["labels"] = labels
    # The capture works: what Lightning logs at INFO shows here unless silenced.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").info("probe: Lightning INFO")
    assert "probe: Lightning INFO" in capfd.readouterr().err

    before = _levels()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ms.tl.fit(mdata, "labels", max_epochs=2)  # the default recipe, progress bar on
    out, err = capfd.readouterr()

    assert _levels() == before  # the user's logging configuration is left as it was
    assert out == ""  # stdout stays free for the user's own output
    assert "Epoch 2/2" in err  # the progress bar, on stderr
    shown = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    assert not [line for line in shown if any(n in line for n in NOISE)], shown
    deprecations = [f"{w.filename}:{w.lineno}: {w.message}" for w in record
                    if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    assert not deprecations, deprecations
    ours = [w for w in record if "single labelled cell" in str(w.message)]
    assert len(ours) == 1, [str(w.message) for w in record]
    assert ours[0].filename == __file__, (ours[0].filename, ours[0].lineno)


def test_quiet_training_restores_levels_and_respects_the_users():
    pytorch, fabric = (logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric"))
    saved = pytorch.level, fabric.level
    try:
        pytorch.setLevel(logging.INFO)
        fabric.setLevel(logging.ERROR)  # a user's choice, stricter than ours
        with pytest.raises(RuntimeError), quiet_training():
            assert pytorch.level == logging.WARNING and fabric.level == logging.ERROR
            raise RuntimeError("training failed")
        assert pytorch.level == logging.INFO and fabric.level == logging.ERROR
    finally:
        pytorch.setLevel(saved[0])
        fabric.setLevel(saved[1])


def test_progress_bar_options_keep_the_users_choices():
    from mmdyn_sc.model._quiet import StderrProgressBar, progress_bar_options

    options = progress_bar_options({})
    assert options["simple_progress_bar"] is False
    assert [type(c) for c in options["callbacks"]] == [StderrProgressBar]
    for given in ({"enable_progress_bar": False}, {"simple_progress_bar": False},
                  {"callbacks": [StderrProgressBar()]}):
        assert progress_bar_options(given) == given


def test_early_stopping_reason_goes_to_stderr(capfd):
    """scvi-tools prints why early stopping stopped; it must not land on stdout."""
    mdata, _ = ms.datasets.synthetic(n_cells=200, noise_modality=False, seed=1)
    ms.pp.prepare(mdata)
    capfd.readouterr()
    model = ms.tl.fit(mdata, "cell_type", max_epochs=40, n_hidden=8, early_stopping_patience=1,
                      early_stopping_monitor="validation_accuracy", enable_progress_bar=False)
    out, err = capfd.readouterr()
    assert len(model.history["train_loss"]) < 40  # it did stop early
    assert "did not improve" in err
    assert out == ""
