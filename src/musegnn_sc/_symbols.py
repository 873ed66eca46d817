"""Gene identifiers: matching datasets by gene symbol when their ``var_names`` are IDs (Ensembl, made-up, ...).

The graph builder records the ``var`` column of symbols (scanpy's ``gene_symbols=``) in ``uns[graph_key]``; everything
that reads a graph (the model, :func:`~musegnn_sc.tl.evaluate`, the raw-expression baselines) names its nodes through
:func:`graph_node_names`, so datasets keyed by IDs and by symbols share genes. NumPy and pandas only (``pp`` uses it).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from musegnn_sc._keys import GraphKeys

if TYPE_CHECKING:
    from anndata import AnnData

#: ``uns[graph_key]`` entry naming the ``var`` column of gene symbols the graph's nodes are named by.
SYMBOLS_ENTRY = "gene_symbols"


def clean_symbols(values) -> np.ndarray:
    """Symbols as stripped strings, ``None`` where missing (NaN, ``None``, empty, ``'nan'``)."""
    out = np.empty(len(values), dtype=object)
    for k, v in enumerate(pd.Series(values, dtype=object).to_numpy()):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            out[k] = None
            continue
        s = str(v).strip()
        out[k] = None if not s or s.lower() in ("nan", "none", "na") else s
    return out


def resolve_symbols(adata: AnnData, column: str, gene_sums: np.ndarray, *, what: str) -> tuple[np.ndarray, np.ndarray]:
    """The symbol of every gene and the genes that may become graph nodes under ``gene_symbols=column``.

    Rule: a gene without a symbol is left out; when several IDs carry one symbol, the ID with the most counts in this
    dataset is kept (the first in ``var`` order among equals) and the others are left out. A warning gives the counts.
    """
    if column not in adata.var.columns:
        avail = ", ".join(map(repr, adata.var.columns[:10])) or "none"
        msg = (
            f"`gene_symbols={column!r}` is not a column of the {what}'s `var` (columns: {avail}). Pass the column "
            "that holds the gene symbols, e.g. 'gene_symbols' or 'feature_name'."
        )
        raise KeyError(msg)
    symbols = clean_symbols(adata.var[column])
    missing = np.array([s is None for s in symbols])
    eligible = ~missing
    present = np.flatnonzero(eligible)
    order = present[np.lexsort((present, -np.asarray(gene_sums, dtype=float)[present]))]
    seen: set[str] = set()
    n_dup_ids = 0
    dup_symbols: set[str] = set()
    for k in order:
        s = symbols[k]
        if s in seen:
            eligible[k] = False
            n_dup_ids += 1
            dup_symbols.add(s)
        else:
            seen.add(s)
    if eligible.sum() == 0:
        msg = f"No gene of the {what} has a symbol in `var[{column!r}]`; check the column."
        raise ValueError(msg)
    if missing.any() or n_dup_ids:
        parts = []
        if missing.any():
            parts.append(f"{int(missing.sum())} gene(s) have no symbol in `var[{column!r}]`")
        if n_dup_ids:
            shown = ", ".join(sorted(dup_symbols)[:5]) + (" ..." if len(dup_symbols) > 5 else "")
            parts.append(
                f"{len(dup_symbols)} symbol(s) are carried by several IDs ({shown}): for each the ID with the most "
                f"counts is kept, {n_dup_ids} other ID(s) are dropped"
            )
        warnings.warn(
            f"The {what}: " + "; ".join(parts) + ". These genes cannot be graph nodes.",
            UserWarning,
            stacklevel=4,
        )
    return symbols, eligible


def symbols_column(adata: AnnData, graph_key: str) -> str | None:
    """The ``var`` column the graph under ``graph_key`` names its nodes by, or ``None`` (``var_names``)."""
    info = adata.uns.get(GraphKeys(graph_key).uns, {})
    col = info.get(SYMBOLS_ENTRY) if hasattr(info, "get") else None
    if col is None or str(col) == "none":
        return None
    return str(col)


def graph_node_names(
    adata: AnnData, idx: np.ndarray, graph_key: str, *, what: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """Names of the graph nodes at ``var`` positions ``idx`` (symbols or ``var_names``) and their IDs (or ``None``)."""
    ids = np.asarray(adata.var_names[idx]).astype(str)
    col = symbols_column(adata, graph_key)
    if col is None:
        return ids.astype(object), None
    if col not in adata.var.columns:
        msg = (
            f"The graph of {what} names its genes by `var[{col!r}]`, which is missing. Restore the column or "
            "rebuild the graph."
        )
        raise KeyError(msg)
    names = clean_symbols(adata.var[col].to_numpy()[idx])
    bad = [ids[k] for k, s in enumerate(names) if s is None]
    if bad:
        msg = f"Graph genes {bad[:5]} of {what} have no symbol in `var[{col!r}]`; rebuild the graph."
        raise ValueError(msg)
    if not pd.Index(names).is_unique:
        dup = pd.Index(names)[pd.Index(names).duplicated()].unique()[:5].tolist()
        msg = f"Graph genes of {what} share symbols {dup} in `var[{col!r}]`; rebuild the graph."
        raise ValueError(msg)
    return names, ids.astype(object)


def var_positions(adata: AnnData, genes, graph_key: str = "coexpression") -> np.ndarray:
    """``var`` positions of ``genes`` given as ``var_names`` or as the symbols the graph names its nodes by (-1: absent)."""
    genes = pd.Index(np.asarray(genes).astype(str))
    pos = adata.var_names.get_indexer(genes)
    col = symbols_column(adata, graph_key)
    if (pos < 0).any() and col is not None and col in adata.var.columns:
        keys = GraphKeys(graph_key)
        gene_key = adata.uns[keys.uns].get("gene_key", keys.gene)
        nodes = np.flatnonzero(np.asarray(adata.var[gene_key], dtype=bool)) if gene_key in adata.var else []
        symbols = pd.Index(clean_symbols(adata.var[col].to_numpy()[nodes]))
        hit = symbols.get_indexer(genes)
        fill = (pos < 0) & (hit >= 0)
        pos[fill] = np.asarray(nodes)[hit[fill]]
    return pos


_ENSEMBL = r"^ENS[A-Z]*[GTP]\d{6,}(\.\d+)?$"


def _kind(genes: np.ndarray) -> dict[str, float]:
    """Fractions of Ensembl-looking IDs, HUMAN-style (all caps) and Mouse-style (capitalised) symbols."""
    s = pd.Series(np.asarray(genes).astype(str))
    if s.empty:
        return {"ensembl": 0.0, "upper": 0.0, "capitalised": 0.0}
    letters = s.str.replace(r"[^A-Za-z]", "", regex=True)
    return {
        "ensembl": float(s.str.match(_ENSEMBL).mean()),
        "upper": float(((letters.str.len() > 0) & (letters == letters.str.upper())).mean()),
        "capitalised": float(s.str.match(r"^[A-Z][a-z0-9]+[a-z0-9-]*$").mean()),
    }


def identifier_hint(ours, theirs, *, ours_name: str, theirs_name: str) -> str:
    """A sentence naming the likely reason two gene lists share no gene: identifier type, or species (case)."""
    a, b = _kind(np.asarray(list(ours))[:5000]), _kind(np.asarray(list(theirs))[:5000])
    if (a["ensembl"] > 0.5) != (b["ensembl"] > 0.5):
        which = ours_name if a["ensembl"] > 0.5 else theirs_name
        return (
            f"identifier type: the {which} look like Ensembl IDs and the other side does not; map IDs to symbols "
            "(e.g. build the graphs with `gene_symbols=`) or use gene sets keyed by Ensembl ID"
        )
    if (a["capitalised"] > 0.5 and b["upper"] > 0.5) or (a["upper"] > 0.5 and b["capitalised"] > 0.5):
        mouse = ours_name if a["capitalised"] > 0.5 else theirs_name
        return (
            f"species: the {mouse} have mouse-style capitalisation (e.g. 'Gapdh') and the other side human-style "
            "(e.g. 'GAPDH'); use gene sets of the same species, or map orthologues with `msg.pp.map_orthologs`"
        )
    return "the two use different gene identifiers (check species, identifier type and case)"
