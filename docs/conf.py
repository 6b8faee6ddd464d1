# Configuration file for the Sphinx documentation builder.
#
# Follows the scverse cookiecutter template
# (https://github.com/scverse/cookiecutter-scverse).
#
# Build locally with::
#
#     pip install -e ".[doc]"
#     sphinx-build -M html docs docs/_build
#
# Offline builds
# --------------
# Intersphinx needs network access to fetch the ``objects.inv`` inventories of
# anndata, mudata, scanpy, muon, scvi-tools, torch, numpy, pandas and Python.
# It is switched off (``intersphinx_mapping = {}``) when
#
# * the environment variable ``MMDYN_SC_DOCS_OFFLINE`` is set to a non-empty
#   value, e.g. ``MMDYN_SC_DOCS_OFFLINE=1 sphinx-build -M html docs docs/_build``, or
# * ``CI`` is set and ``READTHEDOCS`` is not (i.e. on CI machines other than
#   Read the Docs, which may have no network).
#
# Read the Docs sets both ``CI`` and ``READTHEDOCS`` and keeps intersphinx on.
import os
import sys
from datetime import datetime
from importlib.metadata import PackageNotFoundError, metadata
from pathlib import Path

HERE = Path(__file__).parent
# Let autodoc import the package from the source tree when it is not installed.
sys.path.insert(0, str(HERE.parent / "src"))

# -- Project information -----------------------------------------------------

# Metadata is read from the installed distribution (``pip install -e .``).
_DIST_NAME = "mmdyn-sc"
try:
    info = metadata(_DIST_NAME)
    project = info["Name"]
    author = info.get("Author") or "the mmdyn_sc developers"
    version = info["Version"]
    urls = dict(pu.split(", ", 1) for pu in (info.get_all("Project-URL") or []))
except PackageNotFoundError:  # not installed: fall back to static values
    project = _DIST_NAME
    author = "the mmdyn_sc developers"
    version = "0.1.0"
    urls = {}

copyright = f"{datetime.now():%Y}, {author}"
release = version
repository_url = urls.get("Source", "")

# -- General configuration ---------------------------------------------------

needs_sphinx = "7.0"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx_autodoc_typehints",  # must come after napoleon
]

templates_path = ["_templates"]
html_static_path = ["_static"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
master_doc = "index"
default_role = "literal"

# -- autodoc / autosummary ---------------------------------------------------

autosummary_generate = True
autodoc_member_order = "groupwise"
autodoc_typehints = "description"
# No "members" here: the model methods get their own pages via autosummary in api.md
# (documenting them on the class page too would duplicate the object descriptions).
autodoc_default_options = {"show-inheritance": True}
# Heavy optional imports can be mocked here if the docs build without them.
autodoc_mock_imports: list[str] = []

# -- napoleon (numpy style docstrings) ---------------------------------------

napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_include_init_with_doc = False
napoleon_use_rtype = True  # having a separate entry generally helps readability
napoleon_use_param = True
napoleon_custom_sections = [("Params", "Parameters")]

# -- sphinx_autodoc_typehints ------------------------------------------------

typehints_defaults = "comma"
always_document_param_types = True

# -- MyST / MyST-NB ----------------------------------------------------------

myst_heading_anchors = 6
myst_enable_extensions = [
    "amsmath",
    "colon_fence",
    "deflist",
    "dollarmath",
    "html_image",
    "html_admonition",
]
myst_url_schemes = ("http", "https", "mailto")
# Notebooks are not executed for now (tutorials are stored with outputs).
nb_execution_mode = "off"
nb_merge_streams = True
source_suffix = {
    ".rst": "restructuredtext",
    ".ipynb": "myst-nb",
    ".myst": "myst-nb",
    ".md": "myst-nb",
}

# -- intersphinx -------------------------------------------------------------

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
    "pandas": ("https://pandas.pydata.org/pandas-docs/stable/", None),
    "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
    "mudata": ("https://mudata.readthedocs.io/en/latest/", None),
    "scanpy": ("https://scanpy.readthedocs.io/en/stable/", None),
    "muon": ("https://muon.readthedocs.io/en/latest/", None),
    "scvi-tools": ("https://docs.scvi-tools.org/en/stable/", None),
    "torch": ("https://docs.pytorch.org/docs/stable/", None),
}
# Offline switch (see the header of this file): no inventories are fetched.
if os.environ.get("MMDYN_SC_DOCS_OFFLINE") or (
    os.environ.get("CI") and not os.environ.get("READTHEDOCS")
):
    intersphinx_mapping = {}

# -- Options for HTML output -------------------------------------------------

html_theme = "sphinx_book_theme"
html_title = project
html_theme_options = {
    "use_repository_button": bool(repository_url),
    "repository_url": repository_url,
    "path_to_docs": "docs/",
    "navigation_with_keys": False,
}

pygments_style = "default"

nitpick_ignore = [
    # Add (type, target) pairs here for references Sphinx cannot resolve.
]
