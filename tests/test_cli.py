"""The command line as a user or a pipeline runs it: demo, fit, predict."""

import subprocess
import sys

import anndata
import mudata as md
import numpy as np
import pytest
from scipy import sparse


def _dense(matrix) -> np.ndarray:
    return matrix.toarray() if sparse.issparse(matrix) else np.asarray(matrix)


def test_demo_synthetic(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "mmdyn_sc", "demo", "--dataset", "synthetic", "--out", str(out),
         "--max-epochs", "5"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "attribution_prot.png").stat().st_size > 1000
    assert (out / "training_history.png").stat().st_size > 1000
    query = md.read_h5mu(out / "query_annotated.h5mu")
    assert "mmdyn_prediction" in query.obs and "mmdyn_proba" in query.obsm
    assert "query accuracy" in done.stderr


def test_demo_bad_input(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mmdyn_sc", "demo", "--dataset", "nope"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "invalid choice" in done.stderr


# ---------------------------------------------------------------------------- fit / predict
# One fit and one predict run as subprocesses (the entry point as a pipeline calls it, ~12 s
# of imports each); the checks that stop before any work call ``main`` in-process.


def _same_threads_env() -> dict:
    """Environment for a child process that uses as many torch threads as this one.

    Float sums, hence bit-identity, depend on how many threads share them.
    """
    import os

    import torch

    return {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmdyn_sc", *map(str, args)],
                          capture_output=True, text=True, timeout=600, env=_same_threads_env())


@pytest.fixture(scope="module")
def donor_files(_bmmc_prepared, tmp_path_factory):
    """BMMC CITE-seq written as two .h5mu inputs: donor s1d1 (to fit) and s1d2 (to label)."""
    from mmdyn_sc._utils import copy_mudata, mudata_options

    folder = tmp_path_factory.mktemp("cli")
    mdata = _bmmc_prepared
    paths = {}
    for donor in ("s1d1", "s1d2"):
        paths[donor] = folder / f"{donor}.h5mu"
        with mudata_options():
            copy_mudata(mdata[mdata.obs["batch"] == donor]).write_h5mu(paths[donor])
    return paths


@pytest.fixture(scope="module")
def fitted(donor_files):
    """``mmdyn-sc fit`` on donor s1d1: (completed process, model folder, output file)."""
    folder = donor_files["s1d1"].parent
    model_dir, out = folder / "model", folder / "s1d1_annotated.h5mu"
    done = _cli("fit", donor_files["s1d1"], "--labels", "cell_type",
                "--modalities", "rna", "prot",
                "--layers", "rna=mmdyn_prepared", "prot=mmdyn_prepared",
                "--max-epochs", "3", "--seed", "1", "--n-fits", "2",
                "--model-dir", model_dir, "--out", out)
    return done, model_dir, out


def test_fit_command(fitted):
    done, model_dir, out = fitted
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == ""  # stdout stays free for pipelines
    assert "fit: " in done.stderr and "classes" in done.stderr and "split train" in done.stderr
    # Without --progress: no progress bar, no Lightning device banner.
    assert "Epoch 1/" not in done.stderr and "GPU available" not in done.stderr
    assert (model_dir / "model.pt").is_file()
    annotated = md.read_h5mu(out)
    assert "mmdyn_prediction" in annotated.obs and "mmdyn_proba" in annotated.obsm
    assert set(annotated.obs["mmdyn_split"].astype(str)) <= {"train", "validation"}
    assert annotated.uns["mmdyn"]["train_params"]["max_epochs"] == 3
    assert annotated.uns["mmdyn"]["train_params"]["seed"] == 1
    assert "mmdyn_attribution" in annotated["prot"].varm  # on by default
    # the credit rule (positive partners) is recorded and survives the h5mu file
    rule = annotated.uns["mmdyn"]["attribution"]
    assert rule["partners"] == "positive correlations only"
    assert rule["partner_min_correlation"] == pytest.approx(0.2)
    assert rule["n_fits"] == 2  # --n-fits: the attribution of two fits, averaged


def test_predict_command_matches_loaded_model(fitted, donor_files):
    from mmdyn_sc import MMDynamics

    done, model_dir, _ = fitted
    assert done.returncode == 0, done.stderr[-3000:]
    out = donor_files["s1d2"].parent / "s1d2_annotated.h5mu"
    done = _cli("predict", donor_files["s1d2"], "--model-dir", model_dir, "--key-added", "cli",
                "--out", out, "--no-attribution")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == ""
    assert "predict: " in done.stderr and "query accuracy" in done.stderr
    annotated = md.read_h5mu(out)
    assert {"cli_prediction", "cli_split"} <= set(annotated.obs.columns)
    assert {"cli_proba", "cli_confidence", "cli_latent"} <= set(annotated.obsm.keys())
    assert set(annotated.obs["cli_split"].astype(str)) == {"query"}
    assert "accuracy" in annotated.uns["cli"]["metrics"]["query"]
    assert "cli_attribution" not in annotated["prot"].varm

    query = md.read_h5mu(donor_files["s1d2"])
    expected = MMDynamics.load(str(model_dir), query).predict(query)
    assert annotated.obs_names.equals(query.obs_names)
    np.testing.assert_array_equal(annotated.obs["cli_prediction"].astype(str).to_numpy(),
                                  expected.reindex(query.obs_names).astype(str).to_numpy())


def test_fit_unknown_labels_key(donor_files, tmp_path, capsys):
    from mmdyn_sc._cli import main

    # in this process: the subprocess path is test_fit_command's (a second one costs 9 s)
    assert main(["fit", str(donor_files["s1d1"]), "--labels", "celltype", "--max-epochs", "1",
                 "--model-dir", str(tmp_path / "model"), "--out",
                 str(tmp_path / "out.h5mu")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("mmdyn-sc: error: Labels key 'celltype' not found"), last
    assert "Did you mean 'cell_type'" in last
    assert not (tmp_path / "out.h5mu").exists()


def test_bad_input_exits_2(donor_files, tmp_path, capsys):
    from mmdyn_sc._cli import main

    missing = tmp_path / "missing.h5mu"
    assert main(["fit", str(missing), "--labels", "cell_type", "--model-dir",
                 str(tmp_path / "m"), "--out", str(tmp_path / "o.h5mu")]) == 2
    assert f"mmdyn-sc: error: input file not found: {missing}" in capsys.readouterr().err

    assert main(["predict", str(donor_files["s1d2"]), "--model-dir", str(tmp_path / "nomodel"),
                 "--out", str(tmp_path / "o.h5mu")]) == 2
    err = capsys.readouterr().err
    assert "mmdyn-sc: error: model folder not found" in err and "nomodel" in err

    (tmp_path / "empty").mkdir()
    assert main(["predict", str(donor_files["s1d2"]), "--model-dir", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "o.h5mu")]) == 2
    assert "model.pt is missing" in capsys.readouterr().err

    same = donor_files["s1d2"]
    assert main(["predict", str(same), "--model-dir", str(tmp_path / "empty"),
                 "--out", str(same)]) == 2
    err = capsys.readouterr().err
    assert "is the input file" in err and "--force" in err

    # another format's name: the MuData would be written under it
    assert main(["predict", str(same), "--model-dir", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "predictions.csv")]) == 2
    err = capsys.readouterr().err
    assert "does not end in .h5mu" in err and "predictions.h5mu" in err
    assert not (tmp_path / "predictions.csv").exists()

    with pytest.raises(SystemExit) as exit_info:
        main(["fit", str(same), "--labels", "cell_type", "--layers", "rna", "--model-dir",
              str(tmp_path / "m"), "--out", str(tmp_path / "o.h5mu")])
    assert exit_info.value.code == 2 and "MOD=LAYER" in capsys.readouterr().err
    assert not (tmp_path / "o.h5mu").exists() and not (tmp_path / "m").exists()


def test_subcommand_help(capsys):
    from mmdyn_sc._cli import main

    for command, options in (("fit", ["--labels", "--model-dir", "--out", "--modalities",
                                       "--layers", "--max-epochs", "--recipe", "--progress",
                                       "--force", "--confidence", "--modality-dropout",
                                       "--gate-rank", "--checkpoint-dir", "--checkpoint-every",
                                       "--resume", "--image-key", "--patch-size", "--prepare",
                                       "--h5ad-modality"]),
                             ("predict", ["--model-dir", "--out", "--key-added", "--force",
                                          "--unknown-threshold", "--prepare",
                                          "--h5ad-modality"]),
                             ("demo", ["--dataset", "--out", "--max-epochs", "--seed",
                                       "--progress", "MMDYN_SC_DATA_DIR"])):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert f"usage: mmdyn-sc {command}" in text
        for option in options:
            assert option in text, (command, option)


# ---------------------------------------------------------------------------- input checks
@pytest.fixture(scope="module")
def raw_files(tmp_path_factory):
    """Synthetic raw counts (no prepared layer) as an .h5mu and as an RNA-only .h5ad."""
    import mmdyn_sc as ms
    from mmdyn_sc._utils import mudata_options

    folder = tmp_path_factory.mktemp("raw")
    mdata, _ = ms.datasets.synthetic(n_cells=120, noise_modality=False)
    rna = mdata["rna"].copy()
    rna.obs["cell_type"] = mdata.obs["cell_type"].to_numpy()
    with mudata_options():
        mdata.write_h5mu(folder / "raw.h5mu")
    rna.write_h5ad(folder / "rna.h5ad")
    return {"h5mu": folder / "raw.h5mu", "h5ad": folder / "rna.h5ad"}


def test_fit_stops_on_raw_counts_with_the_fix(raw_files, tmp_path, capsys):
    from mmdyn_sc._cli import main

    out, model_dir = tmp_path / "out.h5mu", tmp_path / "model"
    assert main(["fit", str(raw_files["h5mu"]), "--labels", "cell_type", "--model-dir",
                 str(model_dir), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("mmdyn-sc: error: modalities rna, prot: .X holds raw counts"), last
    assert "--prepare" in last and "--layers rna=X prot=X" in last
    assert captured.out == "" and not out.exists() and not model_dir.exists()


def test_fit_reads_h5ad_and_prepares_when_asked(raw_files, tmp_path, capsys):
    from mmdyn_sc._cli import main

    out = tmp_path / "out.h5mu"
    assert main(["fit", str(raw_files["h5ad"]), "--labels", "cell_type", "--prepare",
                 "--max-epochs", "1", "--model-dir", str(tmp_path / "model"),
                 "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "read as a MuData with one modality 'rna'" in captured.err
    assert "--prepare: normalised the counts in .X of rna" in captured.err
    assert "layers used: rna: layers['mmdyn_prepared']" in captured.err
    annotated = md.read_h5mu(out)
    assert list(annotated.mod) == ["rna"] and "mmdyn_prepared" in annotated["rna"].layers
    assert annotated.uns["mmdyn"]["layers"] == {"rna": "mmdyn_prepared"}
    raw = anndata.read_h5ad(raw_files["h5ad"]).X
    np.testing.assert_array_equal(_dense(annotated["rna"].X), _dense(raw))  # counts kept

    # predict on raw counts: the model needs the prepared layer; --prepare computes it.
    predicted = tmp_path / "predicted.h5mu"
    predict = ["predict", str(raw_files["h5ad"]), "--model-dir", str(tmp_path / "model"),
               "--out", str(predicted)]
    assert main(predict) == 2
    err = capsys.readouterr().err
    assert "no layer 'mmdyn_prepared'" in err and "rerun with --prepare" in err
    assert not predicted.exists()
    assert main([*predict, "--prepare"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "layers used: rna: layers['mmdyn_prepared']" in captured.err
    assert "mmdyn_prediction" in md.read_h5mu(predicted).obs


def test_demo_without_network_names_the_ways_out_and_leaves_nothing(tmp_path, monkeypatch,
                                                                     capsys):
    """A failed download (a refused local port: no real network) ends in exit status 2."""
    from mmdyn_sc._cli import main
    from mmdyn_sc._settings import settings
    from mmdyn_sc.datasets import _fetch

    bmmc = "bmmc_cite_neurips2021"
    registry = {name: (f"http://127.0.0.1:9/{name}", sha)
                for name, (_, sha) in _fetch.REGISTRY[bmmc].items()}
    monkeypatch.setitem(_fetch.REGISTRY, bmmc, registry)
    monkeypatch.setattr(settings, "_data_dir", tmp_path / "cache")
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("mmdyn-sc: error: cannot get the BMMC demo data"), last
    assert "MMDYN_SC_DATA_DIR" in last and "--dataset synthetic" in last
    assert captured.out == ""
    assert list(tmp_path.iterdir()) == []  # no output folder, no empty cache folder


# ---------------------------------------------------------------------------- reproducibility
def _fit_in_process(path, **options):
    import mmdyn_sc as ms

    mdata = md.read_h5mu(path)
    model = ms.tl.fit(mdata, "cell_type", modalities=["rna", "prot"],
                      layers={"rna": "mmdyn_prepared", "prot": "mmdyn_prepared"},
                      enable_progress_bar=False, **options)
    return mdata, model


def test_fit_is_bit_identical_across_processes(fitted, donor_files):
    """The CLI's fit (another process) and an in-process fit: the same weights, bit for bit
    (the CLI's extra fit, ``--n-fits 2``, changes only the attribution)."""
    import torch

    from mmdyn_sc import MMDynamics

    done, model_dir, out = fitted
    assert done.returncode == 0, done.stderr[-3000:]
    mdata, model = _fit_in_process(donor_files["s1d1"], max_epochs=3, seed=1)
    loaded = MMDynamics.load(str(model_dir), mdata)
    assert len(loaded.attribution_members_) == 1  # --n-fits 2 kept its extra fit
    other = loaded.module.state_dict()
    mine = model.module.state_dict()
    assert mine.keys() == other.keys()
    unequal = [k for k in mine if not torch.equal(mine[k], other[k])]
    assert not unequal, unequal
    annotated = md.read_h5mu(out)
    np.testing.assert_array_equal(annotated.obsm["mmdyn_proba"].to_numpy(),
                                  mdata.obsm["mmdyn_proba"].to_numpy())


#: ``mmdyn-sc fit`` as the entry point runs it, but the process kills itself (SIGKILL, as an
#: out-of-memory killer or a cluster's scheduler would) at the first batch of epoch index
#: KILL_EPOCH: always at the same point, after the checkpoint of the epoch before it.
_SELF_KILLING_FIT = """
import os, signal, sys
from lightning.pytorch.callbacks import Callback
from mmdyn_sc.model._checkpoint import MMDynamicsTrainRunner

class KillAt(Callback):
    def on_train_batch_start(self, trainer, *args):
        if trainer.current_epoch == int(os.environ["KILL_EPOCH"]):
            os.kill(os.getpid(), signal.SIGKILL)

init = MMDynamicsTrainRunner.__init__
def killing_init(self, *args, **kwargs):
    init(self, *args, **kwargs)
    self.trainer.callbacks.append(KillAt())
MMDynamicsTrainRunner.__init__ = killing_init

from mmdyn_sc._cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_killed_fit_resumes_to_the_uninterrupted_result(donor_files, tmp_path):
    """``mmdyn-sc fit --checkpoint-dir`` killed mid-training, then resumed: same predictions."""
    import signal

    import torch

    checkpoints = tmp_path / "checkpoints"
    arguments = ["fit", str(donor_files["s1d1"]),
                 "--labels", "cell_type", "--modalities", "rna", "prot",
                 "--layers", "rna=mmdyn_prepared", "prot=mmdyn_prepared", "--seed", "2",
                 "--max-epochs", "400", "--checkpoint-dir", str(checkpoints),
                 "--checkpoint-every", "2", "--model-dir", str(tmp_path / "model"),
                 "--out", str(tmp_path / "out.h5mu")]
    done = subprocess.run([sys.executable, "-c", _SELF_KILLING_FIT, *arguments],
                          capture_output=True, text=True, timeout=600,
                          env={**_same_threads_env(), "KILL_EPOCH": "6"})
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    assert not (tmp_path / "out.h5mu").exists()
    # Checkpoints after epochs (0-based) 1, 3, 5; killed in epoch 6, before the next one.
    assert (checkpoints / "epoch0005.ckpt").is_file()
    assert not (checkpoints / "epoch0007.ckpt").exists()
    saved_epoch = torch.load(checkpoints / "last.ckpt", map_location="cpu",
                             weights_only=False)["epoch"]
    assert saved_epoch == 5

    # one fit: the extra fit of the default (n_fits="auto") has no checkpoints to resume
    options = {"max_epochs": 400, "seed": 2, "checkpoint_dir": str(checkpoints), "n_fits": 1}
    resumed, resumed_model = _fit_in_process(donor_files["s1d1"], resume=True,
                                             checkpoint_every_n_epochs=2, **options)
    options.pop("checkpoint_dir")
    reference, reference_model = _fit_in_process(donor_files["s1d1"], **options)
    np.testing.assert_array_equal(resumed.obsm["mmdyn_proba"].to_numpy(),
                                  reference.obsm["mmdyn_proba"].to_numpy())
    # The history was carried through the checkpoint: every epoch, the same values.
    for name, values in reference.uns["mmdyn"]["history"].items():
        np.testing.assert_allclose(resumed.uns["mmdyn"]["history"][name], values, rtol=1e-6,
                                   err_msg=name)
    # Resuming a fit with other settings is refused, naming what differs.
    import pytest

    with pytest.raises(ValueError, match="seed"):
        _fit_in_process(donor_files["s1d1"], resume=True, max_epochs=400, seed=3,
                        checkpoint_dir=str(checkpoints), checkpoint_every_n_epochs=2)


def test_fit_transductive_pseudo_labels_the_unlabelled_cells(_bmmc_prepared, tmp_path, capsys):
    from mmdyn_sc._cli import main
    from mmdyn_sc._utils import copy_mudata, mudata_options

    mdata = copy_mudata(_bmmc_prepared)
    mdata.obs["reference"] = mdata.obs["cell_type"].astype(object).where(
        mdata.obs["batch"] == "s1d1", None)
    path, out = tmp_path / "both.h5mu", tmp_path / "out.h5mu"
    with mudata_options():
        mdata.write_h5mu(path)
    assert main(["fit", str(path), "--labels", "reference", "--transductive",
                 "--max-epochs", "3", "--no-attribution", "--model-dir",
                 str(tmp_path / "model"), "--out", str(out)]) == 0
    assert "pseudo_labeled" in capsys.readouterr().err
    annotated = md.read_h5mu(out)
    assert annotated.uns["mmdyn"]["transductive"]["n_pseudo_labeled"] > 0
    query = (annotated.obs["batch"] == "s1d2").to_numpy()
    assert (annotated.obs["mmdyn_split"][query].astype(str)
            .isin(["pseudo_labeled", "unlabeled"]).all())
    # the training labels survive the h5mu file: the reference's own, pseudo-labels or missing
    training = annotated.obs["mmdyn_training_label"]
    np.testing.assert_array_equal(training[~query].astype(str),
                                  annotated.obs["reference"][~query].astype(str))
    pseudo = (annotated.obs["mmdyn_split"] == "pseudo_labeled").to_numpy()
    assert training[pseudo].notna().all() and training[query & ~pseudo].isna().all()
