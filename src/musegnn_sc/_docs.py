"""Shared docstring fragments, formatted into docstrings with :func:`doc_params` (scanpy's ``_doc_params``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

doc_adata_counts = """\
adata
    Annotated data matrix of shape ``n_obs`` x ``n_vars`` (cells x genes) holding raw counts in ``X`` or in
    ``layers[layer]``."""

doc_layer = """\
layer
    Layer holding raw integer counts; ``None`` uses ``adata.X``."""

doc_copy = """\
copy
    Return a modified copy instead of writing to the object passed in."""

doc_chunk_size = """\
chunk_size
    Number of cells processed at a time. Memory grows with ``chunk_size x n_genes``; results do not depend on it."""

doc_show_save = """\
show
    Show the figure; ``None`` follows ``scanpy.settings.autoshow``.
save
    Path to save the figure to (format from the extension)."""

doc_ax_show_save = f"""\
ax
    Axes to draw in; a new figure if ``None``.
{doc_show_save}"""

doc_returns_axes = """\
Returns
-------
The Axes if ``show`` is false, else ``None``."""

doc_key_added = """\
key_added
    Prefix of every key written (``varp['{key_added}_connectivities']`` and so on)."""


def doc_params(**kwds: str) -> Callable[[F], F]:
    """Format ``{name}`` placeholders of a docstring with the shared fragments above."""

    def dec(obj: F) -> F:
        # Fragments are written flush left: clean the docstring's indentation first, as `inspect.getdoc` would.
        obj.__doc__ = inspect.cleandoc(obj.__doc__).format_map(kwds)
        return obj

    return dec
