"""The command line as a user or a pipeline runs it: demo, fit, predict."""

import subprocess
import sys

import mudata as md
import numpy as np
import pytest


def test_demo_synthetic(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "mmdyn_sc", "demo", "--dataset", "synthetic", "--out", str(out),
         "--max-epochs", "5"],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "feature_weights_rna.png").stat().st_size > 1000
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
                "--max-epochs", "3", "--seed", "1", "--model-dir", model_dir, "--out", out)
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


def test_predict_command_matches_loaded_model(fitted, donor_files):
    from mmdyn_sc import MMDynamics

    done, model_dir, _ = fitted
    assert done.returncode == 0, done.stderr[-3000:]
    out = donor_files["s1d2"].parent / "s1d2_annotated.h5mu"
    done = _cli("predict", donor_files["s1d2"], "--model-dir", model_dir, "--key-added", "cli",
                "--out", out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == ""
    assert "predict: " in done.stderr and "query accuracy" in done.stderr
    annotated = md.read_h5mu(out)
    assert {"cli_prediction", "cli_split"} <= set(annotated.obs.columns)
    assert {"cli_proba", "cli_confidence", "cli_latent"} <= set(annotated.obsm.keys())
    assert set(annotated.obs["cli_split"].astype(str)) == {"query"}
    assert "accuracy" in annotated.uns["cli"]["metrics"]["query"]

    query = md.read_h5mu(donor_files["s1d2"])
    expected = MMDynamics.load(str(model_dir), query).predict(query)
    assert annotated.obs_names.equals(query.obs_names)
    np.testing.assert_array_equal(annotated.obs["cli_prediction"].astype(str).to_numpy(),
                                  expected.reindex(query.obs_names).astype(str).to_numpy())


def test_fit_unknown_labels_key(donor_files, tmp_path):
    done = _cli("fit", donor_files["s1d1"], "--labels", "celltype", "--max-epochs", "1",
                "--model-dir", tmp_path / "model", "--out", tmp_path / "out.h5mu")
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
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
                                       "--resume", "--image-key", "--patch-size"]),
                             ("predict", ["--model-dir", "--out", "--key-added", "--force",
                                          "--unknown-threshold"])):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        assert f"usage: mmdyn-sc {command}" in text
        for option in options:
            assert option in text, (command, option)


# ---------------------------------------------------------------------------- reproducibility
def _fit_in_process(path, **options):
    import mmdyn_sc as ms

    mdata = md.read_h5mu(path)
    model = ms.tl.fit(mdata, "cell_type", modalities=["rna", "prot"],
                      layers={"rna": "mmdyn_prepared", "prot": "mmdyn_prepared"},
                      enable_progress_bar=False, **options)
    return mdata, model


def test_fit_is_bit_identical_across_processes(fitted, donor_files):
    """The CLI's fit (another process) and an in-process fit: the same weights, bit for bit."""
    import torch

    from mmdyn_sc import MMDynamics

    done, model_dir, out = fitted
    assert done.returncode == 0, done.stderr[-3000:]
    mdata, model = _fit_in_process(donor_files["s1d1"], max_epochs=3, seed=1)
    other = MMDynamics.load(str(model_dir), mdata).module.state_dict()
    mine = model.module.state_dict()
    assert mine.keys() == other.keys()
    unequal = [k for k in mine if not torch.equal(mine[k], other[k])]
    assert not unequal, unequal
    annotated = md.read_h5mu(out)
    np.testing.assert_array_equal(annotated.obsm["mmdyn_proba"].to_numpy(),
                                  mdata.obsm["mmdyn_proba"].to_numpy())


def test_killed_fit_resumes_to_the_uninterrupted_result(donor_files, tmp_path):
    """``mmdyn-sc fit --checkpoint-dir`` killed mid-training, then resumed: same predictions."""
    import signal
    import time

    import torch

    checkpoints = tmp_path / "checkpoints"
    command = [sys.executable, "-m", "mmdyn_sc", "fit", str(donor_files["s1d1"]),
               "--labels", "cell_type", "--modalities", "rna", "prot",
               "--layers", "rna=mmdyn_prepared", "prot=mmdyn_prepared", "--seed", "2",
               "--max-epochs", "400", "--checkpoint-dir", str(checkpoints),
               "--checkpoint-every", "2", "--model-dir", str(tmp_path / "model"),
               "--out", str(tmp_path / "out.h5mu")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env=_same_threads_env())
    deadline = time.monotonic() + 300
    try:
        while not (checkpoints / "epoch0005.ckpt").exists():
            assert process.poll() is None, process.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "out.h5mu").exists()
    saved_epoch = torch.load(checkpoints / "last.ckpt", map_location="cpu",
                             weights_only=False)["epoch"]
    assert saved_epoch >= 3  # last.ckpt is written just after epoch0005.ckpt

    options = {"max_epochs": 400, "seed": 2, "checkpoint_dir": str(checkpoints)}
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
