# Configuration file for the Sphinx documentation builder.
from __future__ import annotations

import os
import re
import sys
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from importlib.metadata import metadata
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "extensions"))

info = metadata("musegnn-sc")
project = "musegnn_sc"
author = "musegnn_sc developers"
copyright = f"{datetime.now():%Y}, {author}"
version = info["Version"]
release = version
repository_url = "https://github.com/musegnn-sc/musegnn_sc"

templates_path = ["_templates"]  # autosummary/class.rst: a class page documents its methods and properties
master_doc = "index"
default_role = "literal"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
nitpicky = True
nitpick_ignore_regex = [(r"py:.*", r"(npt|pd|np|sparse)\..*"), (r"py:.*", r".*Omics|.*Selection")]

extensions = [
    "myst_nb",
    "sphinx_copybutton",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinxcontrib.bibtex",
    "sphinx_autodoc_typehints",
]

autosummary_generate = True
autodoc_member_order = "groupwise"
bibtex_bibfiles = ["references.bib"]
bibtex_reference_style = "author_year"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_include_init_with_doc = False
napoleon_use_rtype = True
napoleon_use_param = True
typehints_defaults = "braces"
always_use_bars_union = True
myst_heading_anchors = 6
myst_enable_extensions = ["amsmath", "colon_fence", "deflist", "dollarmath", "html_image", "html_admonition"]
nb_execution_mode = "off"  # tutorials are committed with their outputs
source_suffix = {".rst": "restructuredtext", ".ipynb": "myst-nb", ".md": "myst-nb"}

# Intersphinx. Each inventory is probed (in parallel, a few seconds at most) before the build: one that cannot be
# fetched (offline, a host that is down) is dropped from the mapping and references into its package are not
# nitpicked (they render as plain text), so the build passes offline; online every reference into the inventories is
# resolved and checked. Nothing else is silenced: references into this package, to reachable inventories and MyST
# cross-references still warn (`-W` fails on them). `MUSEGNN_DOCS_OFFLINE=1` skips the probe (no inventory).
_INVENTORIES = {
    # name: (base URL, regex of the reference targets that live in that inventory)
    "python": ("https://docs.python.org/3/", r"(typing|collections|pathlib|os|io|types|numbers|abc|enum)\..*"),
    "anndata": ("https://anndata.readthedocs.io/en/stable/", r"anndata\..*"),
    "mudata": ("https://mudata.readthedocs.io/en/latest/", r"mudata\..*"),
    "scanpy": ("https://scanpy.readthedocs.io/en/stable/", r"scanpy\..*"),
    "squidpy": ("https://squidpy.readthedocs.io/en/stable/", r"squidpy\..*"),
    "numpy": ("https://numpy.org/doc/stable/", r"numpy\..*"),
    "scipy": ("https://docs.scipy.org/doc/scipy/", r"scipy\..*"),
    "pandas": ("https://pandas.pydata.org/docs/", r"pandas\..*"),
    "matplotlib": ("https://matplotlib.org/stable/", r"matplotlib\..*"),
    "torch": ("https://docs.pytorch.org/docs/stable/", r"torch\..*"),
    "torch_geometric": ("https://pytorch-geometric.readthedocs.io/en/latest/", r"torch_geometric\..*"),
    "lightning": ("https://lightning.ai/docs/pytorch/stable/", r"(lightning|pytorch_lightning)\..*"),
    "scvi": ("https://docs.scvi-tools.org/en/stable/", r"scvi\..*"),
}


def _reachable(url: str, timeout: float = 4.0) -> bool:
    try:
        with urllib.request.urlopen(url + "objects.inv", timeout=timeout) as response:
            return response.status == 200 and response.read(64).startswith(b"# Sphinx inventory")
    except Exception:  # noqa: BLE001 - any failure (DNS, timeout, HTTP error) means "not reachable"
        return False


# MUSEGNN_DOCS_INVENTORY_DIR: a folder of saved inventories (`python.inv`, `anndata.inv`, ...) used instead of the
# network, e.g. to build offline with every reference checked.
_local = Path(os.environ.get("MUSEGNN_DOCS_INVENTORY_DIR", "") or "/nonexistent")
_local = {name: _local / f"{name}.inv" for name in _INVENTORIES if (_local / f"{name}.inv").is_file()}
if os.environ.get("MUSEGNN_DOCS_OFFLINE", "") not in ("", "0"):
    _reach = dict.fromkeys(_INVENTORIES, False)
else:
    with ThreadPoolExecutor(len(_INVENTORIES)) as _pool:
        _reach = dict(zip(_INVENTORIES, _pool.map(_reachable, (u for u, _ in _INVENTORIES.values())), strict=True))
_reach |= dict.fromkeys(_local, True)
intersphinx_mapping = {
    name: (url, str(_local[name]) if name in _local else None)
    for name, (url, _) in _INVENTORIES.items()
    if _reach[name]
}
intersphinx_timeout = 10
_unreachable = sorted(name for name, ok in _reach.items() if not ok)
if _unreachable:
    print(f"intersphinx: not reachable, references not checked: {', '.join(_unreachable)}", file=sys.stderr)
    nitpick_ignore_regex += [(r"py:.*", _INVENTORIES[name][1]) for name in _unreachable]

# Where autodoc-typehints writes the defining module of a class, the inventories list its public name.
_QUALNAME_OVERRIDES = {
    "anndata._core.anndata.AnnData": "anndata.AnnData",
    "mudata._core.mudata.MuData": "mudata.MuData",
    "pandas.core.frame.DataFrame": "pandas.DataFrame",
    "pandas.core.series.Series": "pandas.Series",
    "matplotlib.axes._axes.Axes": "matplotlib.axes.Axes",
    "matplotlib.figure.Figure": "matplotlib.figure.Figure",
    "scipy.sparse._csr.csr_matrix": "scipy.sparse.csr_matrix",
    "scipy.sparse._csr.csr_array": "scipy.sparse.csr_array",
}


def _public_name(target: str) -> str:
    """``musegnn_sc.pp._cscore.CSCoreResult`` -> ``musegnn_sc.pp.CSCoreResult``; the overrides above."""
    if target in _QUALNAME_OVERRIDES:
        return _QUALNAME_OVERRIDES[target]
    return re.sub(r"^(musegnn_sc(?:\.[a-z]\w*)*)(?:\._\w+)+\.(?=[A-Za-z]\w*$)", r"\1.", target)


def _resolve_public_name(app, env, node, contnode):
    """``missing-reference``: retry a reference to a private defining module under its public name."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    public = _public_name(target)
    if public == target:
        return None
    node["reftarget"] = public  # also what the nitpick check (and its ignore list) sees if it stays unresolved
    resolved = env.get_domain("py").resolve_xref(
        env, node.get("refdoc", env.docname), app.builder, node["reftype"], public, node, contnode
    )
    if resolved is None and "sphinx.ext.intersphinx" in app.extensions:
        from sphinx.ext.intersphinx import missing_reference

        resolved = missing_reference(app, env, node, contnode)
    return resolved


def _readme_links(app, relative_path, parent_docname, content):
    """The README (included in the index) links ``benchmarks/README.md`` and ``docs/*.md``, pages of the docs.

    In the docs ``benchmarks/README.md`` is ``benchmarks.md``, and ``docs/scale.md`` is ``scale.md`` (the index is
    in ``docs/``).
    """
    if Path(relative_path).name == "README.md" and parent_docname == "index":
        content[0] = content[0].replace("](benchmarks/README.md)", "](benchmarks.md)").replace("](docs/", "](")


def setup(app):
    """Local hooks: public names of private classes, the README's links."""
    app.connect("missing-reference", _resolve_public_name, priority=400)
    app.connect("include-read", _readme_links)


html_theme = "sphinx_book_theme"
html_title = project
html_theme_options = {"repository_url": repository_url, "use_repository_button": True, "path_to_docs": "docs/"}
pygments_style = "default"
