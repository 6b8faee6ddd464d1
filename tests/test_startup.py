"""``import mmdyn_sc`` and ``mmdyn-sc --help`` start fast: heavy libraries load on first use."""

import json
import subprocess
import sys

HEAVY = ("scvi", "lightning", "matplotlib", "torch")

_PROBE = f"""
import json, sys
heavy = {HEAVY!r}
loaded = lambda: sorted(m for m in heavy if m in sys.modules)
import mmdyn_sc as ms
report = {{"import": loaded()}}
names = dir(ms), dir(ms.pl), dir(ms.pp), dir(ms.datasets)
report["dir"] = [sorted(n) for n in names]
report["subpackages"] = loaded()
report["plot"] = ms.pl.feature_weights.__module__
report["after_plot"] = loaded()
report["fit"] = ms.tl.fit.__module__
report["model"] = ms.MMDynamics.__name__
report["after_fit"] = loaded()
print(json.dumps(report))
"""


def test_import_defers_heavy_libraries():
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["import"] == []
    top, pl, pp, datasets = report["dir"]
    assert {"MMDynamics", "tl", "pl", "pp", "datasets", "settings", "Key"} <= set(top)
    assert {"feature_weights", "training_history", "heatmaps", "confusion"} <= set(pl)
    assert {"prepare", "images_from_files"} <= set(pp)
    assert {"synthetic", "bmmc_cite", "DownloadError"} <= set(datasets)
    assert "matplotlib" not in report["subpackages"] and "scvi" not in report["subpackages"]
    assert report["plot"] == "mmdyn_sc.pl._feature_weights"
    assert "matplotlib" in report["after_plot"]
    assert report["fit"] == "mmdyn_sc.tl._fit" and report["model"] == "MMDynamics"
    assert {"scvi", "lightning", "torch"} <= set(report["after_fit"])


def test_help_exits_0_without_heavy_imports():
    probe = ("import runpy, sys; sys.argv = ['mmdyn-sc', '--help']\n"
             "try:\n    runpy.run_module('mmdyn_sc', run_name='__main__')\n"
             "except SystemExit as e:\n"
             f"    print('EXIT', e.code, sorted(m for m in {HEAVY!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=300)
    assert "usage: mmdyn-sc" in done.stdout and "{demo,fit,predict}" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "EXIT 0 []", done.stdout[-500:]
    done = subprocess.run([sys.executable, "-m", "mmdyn_sc", "--help"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and "usage: mmdyn-sc" in done.stdout and done.stderr == ""


def test_unknown_attribute_raises_attribute_error():
    import pytest

    import mmdyn_sc as ms

    for module, name in ((ms, "fitt"), (ms.pl, "umap"), (ms.pp, "normalize"),
                         (ms.datasets, "pbmc3k")):
        with pytest.raises(AttributeError, match=name):
            getattr(module, name)
