"""The gene-level AnnData of a :func:`~musegnn_sc.datasets.toy_mudata`'s planted modules, with an embedding in which hubs are central."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData

from musegnn_sc._keys import EMBEDDING
from musegnn_sc.datasets._simulate import NO_MODULE, TRUTH_KEY


def toy_module_gdata(
    mdata: MuData, *, n_dims: int = 32, key_added: str = "leiden", background: bool = False, seed: int = 0
) -> AnnData:
    """Gene-level AnnData holding the planted modules of :func:`~musegnn_sc.datasets.toy_mudata` as if :func:`~musegnn_sc.tl.gene_modules` had found them.

    One row per (dataset, gene) of the planted modules, in the layout of :func:`musegnn_sc.tl.train_musegnn`
    (``obs`` columns ``gene``, ``dataset``, ``omics``, ``tissue``, ``species``), the planted module in
    ``obs[key_added]`` and an embedding in ``obsm['X_musegnn']``: each module has a random unit direction and a
    gene lies at a distance from it that grows as its loading on the module factor falls, so the planted hub genes
    (largest loadings) are the most central ones. It lets the cell-level tools (:func:`~musegnn_sc.tl.score_modules`,
    :func:`~musegnn_sc.tl.hub_genes`, ...) be tested and shown without training a model.

    Parameters
    ----------
    mdata
        Output of :func:`~musegnn_sc.datasets.toy_mudata` (its ``uns['toy_truth']`` is read).
    n_dims
        Embedding width.
    key_added
        ``obs`` column of the modules.
    background
        Also include the background genes, as a module named ``'none'``.
    seed
        Random seed of the embedding.

    Returns
    -------
    Gene-level AnnData (no ``X``) with the modules in ``obs[key_added]``, ``obs['loading']`` (the planted loading)
    and the embedding in ``obsm['X_musegnn']``.

    Examples
    --------
    >>> import musegnn_sc as msg
    >>> mdata = msg.datasets.toy_mudata(n_samples=6)
    >>> gdata = msg.datasets.toy_module_gdata(mdata)
    >>> msg.tl.score_modules(mdata, gdata, mods="rna_heart_1")
    """
    if TRUTH_KEY not in mdata.uns or "loading" not in mdata.uns[TRUTH_KEY].get("genes", pd.DataFrame()):
        msg = "`mdata` has no planted truth with loadings in `uns['toy_truth']`: pass the output of `toy_mudata`."
        raise ValueError(msg)
    genes = mdata.uns[TRUTH_KEY]["genes"]
    if not background:
        genes = genes[genes["module"].astype(str) != NO_MODULE]
    rng = np.random.default_rng(seed)
    modules = [str(m) for m in genes["module"].cat.categories if (genes["module"] == m).any()]
    centres = rng.normal(size=(len(modules), n_dims))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    idx = genes["module"].astype(str).map({m: i for i, m in enumerate(modules)}).to_numpy()
    loading = genes["loading"].to_numpy(dtype=np.float64)
    # distance to the centre: small for the largest loadings (0.2 for a loading of 1.1, 1.6 for 0.4)
    spread = np.where(loading > 0, 0.2 + 2.0 * np.clip(1.1 - loading, 0.0, None), 1.0)
    noise = rng.normal(size=(len(genes), n_dims)) / np.sqrt(n_dims)
    emb = centres[idx] + spread[:, None] * noise
    obs = pd.DataFrame(
        {
            "gene": genes["gene"].astype(str).to_numpy(),
            "dataset": pd.Categorical(genes["dataset"].astype(str)),
            "omics": pd.Categorical([str(mdata.mod[d].uns.get("omics", "rna")) for d in genes["dataset"]]),
            "tissue": pd.Categorical([str(mdata.mod[d].uns.get("tissue", "")) for d in genes["dataset"]]),
            "species": pd.Categorical([str(mdata.mod[d].uns.get("species", "")) for d in genes["dataset"]]),
            key_added: pd.Categorical(genes["module"].astype(str), categories=modules),
            "loading": loading,
        },
        index=pd.Index([f"{d}:{g}" for d, g in zip(genes["dataset"], genes["gene"], strict=True)]),
    )
    gdata = AnnData(obs=obs)
    gdata.obsm[EMBEDDING] = emb.astype(np.float32)
    return gdata
