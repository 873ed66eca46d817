"""How often orthologous genes of two species fall in the same gene module (the paper's Appendix J analysis)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from musegnn_sc import _logging


def orthologous_pair_modules(
    labels_a: pd.Series, genes_a: pd.Series, labels_b: pd.Series, genes_b: pd.Series
) -> pd.DataFrame:
    """Modules of every (row of species A, row of species B) combination of orthologous genes.

    ``genes_b`` must already be expressed in species A's symbols; an orthologous pair is then a shared symbol. A gene
    embedded from several datasets contributes one combination per pair of rows.
    """
    a = pd.DataFrame({"gene": genes_a.astype(str).to_numpy(), "module_a": labels_a.astype(str).to_numpy()})
    b = pd.DataFrame({"gene": genes_b.astype(str).to_numpy(), "module_b": labels_b.astype(str).to_numpy()})
    return a.merge(b, on="gene", how="inner")


def orthology_table(pairs: pd.DataFrame, modules: list[str]) -> pd.DataFrame:
    """Per-module and overall co-clustering of orthologous pairs, with the expectation under independence.

    For module ``m``, ``fraction`` is the share of pairs touching ``m`` (either member in it) whose two members are
    both in it; if modules were assigned independently with the observed marginals ``p_a``, ``p_b`` it would be
    ``p_a p_b / (p_a + p_b - p_a p_b)``. The ``'all'`` row gives the share of all pairs in the same module, expected
    ``sum_m p_a(m) p_b(m)``.
    """
    n = len(pairs)
    same = pairs["module_a"].to_numpy() == pairs["module_b"].to_numpy()
    ca = pairs["module_a"].value_counts().reindex(modules, fill_value=0).to_numpy(float)
    cb = pairs["module_b"].value_counts().reindex(modules, fill_value=0).to_numpy(float)
    both = pairs.loc[same, "module_a"].value_counts().reindex(modules, fill_value=0).to_numpy(float)
    touching = ca + cb - both
    pa, pb = (ca / n, cb / n) if n else (ca * np.nan, cb * np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = both / touching
        expected = pa * pb / (pa + pb - pa * pb)
    out = pd.DataFrame(
        {"n_pairs": touching.astype(int), "n_same": both.astype(int), "fraction": fraction, "expected": expected},
        index=pd.Index(modules, name="module"),
    )
    overall = pd.DataFrame(
        {
            "n_pairs": [n],
            "n_same": [int(same.sum())],
            "fraction": [same.mean() if n else np.nan],
            "expected": [float(np.sum(pa * pb)) if n else np.nan],
        },
        index=pd.Index(["all"], name="module"),
    )
    out = pd.concat([out, overall])
    with np.errstate(invalid="ignore", divide="ignore"):
        out["enrichment"] = out["fraction"] / out["expected"]
    return out


def orthology_score(
    gdata: AnnData,
    table: pd.DataFrame | str | Path | None = None,
    *,
    groupby: str = "leiden",
    species: tuple[str, str] = ("human", "mouse"),
    species_key: str = "species",
    gene_key: str = "gene",
    one_to_one: bool = True,
    min_support: int = 1,
) -> pd.DataFrame:
    """Measure how often orthologous genes of two species fall in the same gene module.

    The paper's Appendix J check that a multi-species embedding keeps the function of orthologues together: pairs
    (a gene of species A, its orthologue in species B) should share modules far more often than chance.

    Parameters
    ----------
    gdata
        Gene-level AnnData with modules in ``obs[groupby]`` (:func:`musegnn_sc.tl.gene_modules`) and the species of
        each row in ``obs[species_key]``.
    table
        Orthologue table (DataFrame or CSV path, as :func:`musegnn_sc.pp.map_orthologs` reads). ``None`` when the
        species B datasets were already renamed with :func:`musegnn_sc.pp.map_orthologs`: orthologues then share
        their symbol.
    groupby
        ``obs`` column of the modules.
    species
        ``(A, B)``: the two species compared, as in ``obs[species_key]`` (and, with a table, its column names).
    species_key
        ``obs`` column of the species.
    gene_key
        ``obs`` column of gene symbols.
    one_to_one
        With a table: use only one-to-one orthologues.
    min_support
        With a table that lists supporting resources: minimum number of resources per pair (see
        :func:`musegnn_sc.pp.map_orthologs`).

    Returns
    -------
    DataFrame with one row per module and a last row ``'all'``: ``n_pairs`` (orthologous row pairs with at least one
    member in the module), ``n_same`` (both members in it), ``fraction`` (``n_same / n_pairs``), ``expected``
    (``fraction`` if modules were independent of orthology, given how many A and B genes each module holds) and
    ``enrichment`` (``fraction / expected``). A pair is one (row of A, row of B) of orthologous genes, so a gene
    embedded from several datasets counts once per dataset.

    Examples
    --------
    >>> msg.tl.orthology_score(gdata, species=("human", "mouse")).loc["all"]
    """
    for key, hint in ((groupby, "Run `msg.tl.gene_modules(gdata)` first."), (species_key, ""), (gene_key, "")):
        if key not in gdata.obs:
            msg = f"`gdata.obs[{key!r}]` not found. {hint or 'Pass the column name.'}"
            raise KeyError(msg)
    sp_a, sp_b = species
    sp = gdata.obs[species_key].astype(str)
    present = sorted(pd.unique(sp))
    for s in (sp_a, sp_b):
        if s not in present:
            msg = f"No gene of species {s!r} in `gdata.obs[{species_key!r}]` (species: {present})."
            raise ValueError(msg)
    t0 = _logging.start(f"scoring co-clustering of {sp_a}-{sp_b} orthologues in obs[{groupby!r}]")
    obs = gdata.obs
    in_a, in_b = (sp == sp_a).to_numpy(), (sp == sp_b).to_numpy()
    genes_b = obs.loc[in_b, gene_key].astype(str)
    if table is not None:
        from musegnn_sc.pp._orthologs import ortholog_pairs, read_ortholog_table, resolve_columns

        df = read_ortholog_table(table)
        src_col, tgt_col = resolve_columns(df, sp_b, sp_a)
        mapping = ortholog_pairs(df, src_col, tgt_col, one_to_one=one_to_one, min_support=min_support)
        genes_b = genes_b.map(mapping)
    mapped = genes_b.notna().to_numpy()
    labels_b = obs.loc[in_b, groupby][mapped]
    pairs = orthologous_pair_modules(obs.loc[in_a, groupby], obs.loc[in_a, gene_key], labels_b, genes_b[mapped])
    labels = obs[groupby]
    modules = [str(c) for c in (labels.cat.categories if hasattr(labels, "cat") else sorted(pd.unique(labels)))]
    if pairs.empty:
        msg = (
            f"No orthologous pair between the {sp_a} and {sp_b} genes. Pass `table=` with an orthologue table, or "
            f"rename the {sp_b} datasets with `msg.pp.map_orthologs` before training."
        )
        raise ValueError(msg)
    res = orthology_table(pairs, modules)
    res.attrs["params"] = {"groupby": groupby, "species": list(species), "n_genes": int(pairs["gene"].nunique())}
    _logging.finish(
        f"{res.loc['all', 'fraction']:.3f} of {len(pairs)} orthologous pairs share a module "
        f"(expected {res.loc['all', 'expected']:.3f})",
        t0,
    )
    return res
