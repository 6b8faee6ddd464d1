"""The demo command, as a user runs it."""

import subprocess
import sys

import mudata as md


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
