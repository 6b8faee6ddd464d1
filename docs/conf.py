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
# anndata, mudata, scanpy, muon, scvi-tools, Lightning, torch, numpy, pandas,
# matplotlib and Python. It is switched off (``intersphinx_mapping = {}``) when
#
# * the environment variable ``MMDYN_SC_DOCS_OFFLINE`` is set to a non-empty
#   value, e.g. ``MMDYN_SC_DOCS_OFFLINE=1 sphinx-build -M html docs docs/_build``, or
# * ``CI`` is set and ``READTHEDOCS`` is not (i.e. on CI machines other than
#   Read the Docs, which may have no network).
#
# Read the Docs sets both ``CI`` and ``READTHEDOCS`` and keeps intersphinx on.
#
# The build is nitpicky (every cross-reference must resolve). Offline, references
# into the packages above cannot resolve, so only then they are ignored
# (``nitpick_ignore_regex`` below); references into ``mmdyn_sc`` are always checked.
#
# Tutorials
# ---------
# ``docs/tutorials`` is a symbolic link to the repository's ``tutorials/`` folder.
# The tutorials are MyST notebooks executed by myst-nb at every build (results
# cached in ``docs/_build/.jupyter_cache``); an error in a cell fails the build.
# They read the datasets from ``MMDYN_SC_DATA_DIR`` when set, else the loaders
# download the public originals.
#
# Command line page
# -----------------
# ``cli.md`` shows the ``--help`` of ``mmdyn-sc`` and its subcommands through the
# ``cli-help`` directive defined below, which formats the parser of ``mmdyn_sc._cli`` at build
# time: the page cannot drift from the code, and needs no notebook execution.
#
# Link check
# ----------
# The HTML build checks no external links (it must work offline). A separate step, which
# needs network, checks them (the tutorials are not executed for it; offline mode keeps the
# hundreds of intersphinx targets out of the check)::
#
#     MMDYN_SC_DOCS_OFFLINE=1 python -m sphinx -b linkcheck -D nb_execution_mode=off \
#         docs docs/_build/linkcheck
#
# It exits non-zero on a broken link; ``docs/_build/linkcheck/output.txt`` lists them.
# ``bash .ci/linkcheck`` runs it, and skips it (exit 0) without network.
import contextlib
import inspect
import io
import os
import re
import sys
import tomllib
import warnings
from datetime import datetime
from importlib.metadata import PackageNotFoundError, metadata
from pathlib import Path

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

HERE = Path(__file__).parent
# Let autodoc import the package from the source tree when it is not installed.
sys.path.insert(0, str(HERE.parent / "src"))

# The tutorials' kernels run in the notebooks' folder and inherit this environment: make a
# relative MMDYN_SC_DATA_DIR (e.g. ../shared/data from the repository root) absolute.
_data_dir = os.environ.get("MMDYN_SC_DATA_DIR")
if _data_dir:
    os.environ["MMDYN_SC_DATA_DIR"] = str(Path(_data_dir).expanduser().resolve())

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
    version = "0.2.0"
    urls = {}

# The project URLs are read from pyproject.toml itself, so that a change there shows without
# reinstalling (an editable install keeps the metadata of the time it was installed).
with contextlib.suppress(OSError, KeyError, tomllib.TOMLDecodeError):
    urls = tomllib.loads((HERE.parent / "pyproject.toml").read_text())["project"]["urls"]

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
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    "**.ipynb_checkpoints",
    "tutorials/README.md",  # the folder's GitHub landing page; docs/tutorials.md is the docs one
]
master_doc = "index"
default_role = "literal"

# -- autodoc / autosummary ---------------------------------------------------

autosummary_generate = True
autodoc_member_order = "groupwise"
autodoc_typehints = "description"
# No "members" here: methods get their own pages via autosummary (api.md, and the class
# template _templates/autosummary/class.rst, which lists what a class defines itself);
# documenting them on the class page too would duplicate the object descriptions.
autodoc_default_options = {"show-inheritance": True}
# Heavy optional imports can be mocked here if the docs build without them.
autodoc_mock_imports: list[str] = []

#: Public-looking members that are plumbing between the model and ``mmdyn_sc.tl``: they take
#: or return the private ``InferenceResult`` (or, for ``label_codes``, have a docstring that
#: napoleon misreads). Left out of the class page, as they were before it listed members.
UNDOCUMENTED_MEMBERS = {
    "MMDynamics": {"infer", "confidence_frame", "predicted_tcp_frame", "feature_weight_frames",
                   "informativeness", "attribution_frames", "attribution_blocks",
                   "label_codes"},
}


class _NotGiven:
    """Shown instead of a bare ``object()`` default, whose repr has a memory address."""

    def __repr__(self) -> str:
        return "<from recipe>"


def _readable_sentinel_defaults(app, obj, bound_method):
    """``autodoc-before-process-signature``: give bare ``object()`` defaults a fixed repr.

    :func:`mmdyn_sc.tl.fit` marks the options it takes from its ``recipe`` with such a
    sentinel; left alone, the signature and the "default:" of each of those parameters would
    read ``<object object at 0x7f...>`` (different in every build).
    """
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return
    parameters = [
        p.replace(default=_NotGiven()) if type(p.default) is object else p
        for p in signature.parameters.values()
    ]
    if parameters != list(signature.parameters.values()):
        obj.__signature__ = signature.replace(parameters=parameters)


def _skip_member(app, what, name, obj, skip, options):
    """``autodoc-skip-member`` (also asked by autosummary when it lists a class's members)."""
    owner = getattr(obj, "__qualname__", "").rpartition(".")[0]
    if isinstance(obj, property):
        owner = getattr(obj.fget, "__qualname__", "").rpartition(".")[0]
    if name in UNDOCUMENTED_MEMBERS.get(owner, ()):
        return True
    return None


# -- napoleon (numpy style docstrings) ---------------------------------------

napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_include_init_with_doc = False
napoleon_use_rtype = True  # having a separate entry generally helps readability
napoleon_use_param = True
napoleon_custom_sections = [("Params", "Parameters")]

# -- sphinx_autodoc_typehints ------------------------------------------------

# sphinx-autodoc-typehints calls ``Parser.set_application()``, deprecated in Sphinx 9: each
# docstring it parses prints a RemovedInSphinx10Warning (about 50 per build) that says nothing
# about our docs. Its newest release (3.6.1 when this was written) still does (upstream issue
# tox-dev/sphinx-autodoc-typehints#588), so a version pin cannot help; this filter hides exactly
# that message, raised from that package's code. The category is its base class,
# DeprecationWarning, because sphinx.deprecation defines RemovedInSphinx10Warning only in some
# Sphinx versions. Remove the filter once a release stops calling set_application.
warnings.filterwarnings(
    "ignore",
    message=r"'sphinx_autodoc_typehints\..*\.set_application' is deprecated",
    category=DeprecationWarning,
    module=r"sphinx_autodoc_typehints\.",
)

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
# Tutorials are stored without outputs and executed at build time. "cache" re-executes a
# notebook only when its code changed (jupyter-cache under docs/_build); CI builds from a
# clean docs/_build, so every CI build executes them.
nb_execution_mode = "cache"
nb_execution_timeout = 600
# The BCCD crops of the images tutorial have no licence and are never downloaded
# (datasets.bccd_wbc reads a local copy only): Read the Docs cannot execute that page, so it
# shows it without outputs (the page says so); CI, which has the crops, executes it.
nb_execution_excludepatterns = ["tutorials/images.md"] if os.environ.get("READTHEDOCS") else []
nb_execution_raise_on_error = True  # a failing cell fails the build
nb_execution_show_tb = True  # ... and the traceback is in the build log
nb_merge_streams = True
source_suffix = {
    ".rst": "restructuredtext",
    ".ipynb": "myst-nb",
    ".myst": "myst-nb",
    ".md": "myst-nb",
}

# -- intersphinx / nitpicky ---------------------------------------------------

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
    "pandas": ("https://pandas.pydata.org/pandas-docs/stable/", None),
    "matplotlib": ("https://matplotlib.org/stable/", None),
    "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
    "mudata": ("https://mudata.readthedocs.io/en/latest/", None),
    "scanpy": ("https://scanpy.readthedocs.io/en/stable/", None),
    "muon": ("https://muon.readthedocs.io/en/latest/", None),
    "scvi-tools": ("https://docs.scvi-tools.org/en/stable/", None),
    # scvi-tools' docstrings (inherited by MMDynamics.save) refer to Lightning classes.
    "lightning": ("https://lightning.ai/docs/pytorch/stable/", None),
    "torch": ("https://docs.pytorch.org/docs/stable/", None),
}

# Every cross-reference must resolve.
nitpicky = True
nitpick_ignore: list[tuple[str, str]] = []
nitpick_ignore_regex: list[tuple[str, str]] = []

#: Packages whose objects are documented elsewhere (resolved through intersphinx).
EXTERNAL_PACKAGES = (
    "anndata", "mudata", "scanpy", "muon", "scvi", "lightning", "torch", "numpy", "pandas",
    "matplotlib", "scipy", "sklearn",
    # standard library modules that type hints refer to
    "collections", "typing", "os", "pathlib",
)

DOCS_OFFLINE = bool(
    os.environ.get("MMDYN_SC_DOCS_OFFLINE")
    or (os.environ.get("CI") and not os.environ.get("READTHEDOCS"))
)
# Offline switch (see the header of this file): no inventories are fetched, and only then
# unresolved references into external packages are not reported. On Read the Docs every
# reference is checked.
if DOCS_OFFLINE:
    intersphinx_mapping = {}
    nitpick_ignore_regex += [
        (r"py:.*", rf"(?:{'|'.join(EXTERNAL_PACKAGES)})(?:\..*)?"),
    ]

#: Type hints name classes by the module that defines them, often a private one; their docs
#: (and inventories) list them under the public name.
QUALNAME_OVERRIDES = {
    "anndata._core.anndata.AnnData": "anndata.AnnData",
    "mudata._core.mudata.MuData": "mudata.MuData",
    "matplotlib.axes._axes.Axes": "matplotlib.axes.Axes",
    "pandas.core.frame.DataFrame": "pandas.DataFrame",
    "pandas.core.series.Series": "pandas.Series",
    "scvi.model.base._base_model.BaseModelClass": "scvi.model.base.BaseModelClass",
    "lightning.pytorch.core.module.LightningModule": "lightning.pytorch.core.LightningModule",
    "lightning.pytorch.core.datamodule.LightningDataModule":
        "lightning.pytorch.core.LightningDataModule",
    "torch.nn.modules.module.Module": "torch.nn.Module",
}


def _resolve_renamed(app, env, node, contnode):
    """Resolve a Python reference whose target is known under another name."""
    if node.get("refdomain") != "py":
        return None
    reftype, target = node.get("reftype"), node.get("reftarget")
    new = QUALNAME_OVERRIDES.get(target)
    if new is None:
        return None
    node["reftarget"] = new
    resolved = env.get_domain("py").resolve_xref(
        env, node.get("refdoc", ""), app.builder, reftype, new, node, contnode
    )
    if resolved is None and app.config.intersphinx_mapping:
        from sphinx.ext.intersphinx import missing_reference

        resolved = missing_reference(app, env, node, contnode)
    return resolved


# -- Options for HTML output -------------------------------------------------

html_theme = "sphinx_book_theme"
html_title = project
html_theme_options = {
    # Repository and issue tracker buttons in the header (pyproject.toml's [project.urls]).
    "use_repository_button": bool(repository_url),
    "use_issues_button": bool(repository_url),
    "repository_url": repository_url,
    "repository_branch": "main",
    "path_to_docs": "docs/",
    "navigation_with_keys": False,
}

html_css_files = ["custom.css"]

pygments_style = "default"


# -- linkcheck (a separate, network-needing step: see the header) -------------

linkcheck_ignore = [
    r"https?://(localhost|127\.0\.0\.1)(:\d+)?(/.*)?",  # e.g. a local Jupyter server
]
# GitHub renders anchors (#L10, README headings) with JavaScript: check the page, not them.
linkcheck_anchors_ignore_for_url = [r"https://github\.com/.*"]
linkcheck_timeout = 30
linkcheck_retries = 2
linkcheck_workers = 5


# -- the command line page ------------------------------------------------------

#: Width of the generated help text (argparse reads COLUMNS), so that it does not depend on
#: the terminal the docs are built in.
CLI_HELP_COLUMNS = 90
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # Python 3.14's argparse colours with FORCE_COLOR


def cli_help(*command: str) -> str:
    """The text ``mmdyn-sc COMMAND --help`` prints, from the parser of ``mmdyn_sc._cli``."""
    from mmdyn_sc._cli import build_parser

    old_columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(CLI_HELP_COLUMNS)
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            build_parser().parse_args([*command, "--help"])
    finally:
        if old_columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old_columns
    text = _ANSI_ESCAPE.sub("", out.getvalue()).rstrip()
    if not text:
        raise ValueError(f"`mmdyn-sc {' '.join(command)} --help` printed nothing")
    return text


class CLIHelp(SphinxDirective):
    """``cli-help`` directive: ``mmdyn-sc [COMMAND] --help`` as a literal block.

    In MyST, a fenced block ``{cli-help}`` with the subcommand (``fit``) as its argument, or
    none for ``mmdyn-sc --help``. The page is rebuilt when the command line's sources change.
    """

    optional_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        """The help text; an error at the directive if the parser cannot produce it."""
        import mmdyn_sc._cli
        import mmdyn_sc._cli_input

        for module in (mmdyn_sc._cli, mmdyn_sc._cli_input):
            self.env.note_dependency(module.__file__)
        try:
            text = cli_help(*self.arguments)
        except Exception as err:  # reported at the directive, so -W fails the build
            return [self.state.document.reporter.error(
                f"cli-help: {err}", line=self.lineno)]
        block = nodes.literal_block(text, text, language="none")
        self.set_source_info(block)
        return [block]


def _public_bases(app, name, obj, options, bases):
    """Show a private base of ours (e.g. ``module._branch_heads.BranchHeads``) as its bases."""
    i = 0
    while i < len(bases):
        base = bases[i]
        module = getattr(base, "__module__", "")
        if module.startswith("mmdyn_sc.") and module.rsplit(".", 1)[-1].startswith("_") \
                and base.__name__ not in _documented():
            bases[i:i + 1] = list(base.__bases__)
        else:
            i += 1


def _documented() -> set[str]:
    import mmdyn_sc
    import mmdyn_sc.module

    return set(dir(mmdyn_sc)) | set(getattr(mmdyn_sc.module, "__all__", dir(mmdyn_sc.module)))


def setup(app):
    """Sphinx hooks of this project."""
    app.add_directive("cli-help", CLIHelp)
    app.connect("missing-reference", _resolve_renamed)
    app.connect("autodoc-skip-member", _skip_member)
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("autodoc-before-process-signature", _readable_sentinel_defaults)
