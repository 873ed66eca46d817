"""Synthetic gene-level AnnData ("gdata") with planted modules, for tests, docs and tutorials of the downstream tools.

The layout is the one :func:`musegnn_sc.tl.train_musegnn` writes: one row per (dataset, gene), ``obs`` columns
``gene``, ``dataset``, ``omics``, ``tissue``, ``species``, ``is_common`` and the embedding in ``obsm['X_musegnn']``.
Each module has a random direction; a gene's embedding in a dataset is its module direction plus a gene-specific
offset (shared across datasets, so the same gene stays close to itself) plus per-dataset noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from musegnn_sc._keys import EMBEDDING

#: ``uns`` key of the ground truth written by :func:`toy_gdata`.
TOY_TRUTH = "toy_truth"

_DEFAULT_DATASETS = (
    ("rna_heart_1", "rna", "heart", "human", "control"),
    ("rna_heart_2", "rna", "heart", "human", "control"),
    ("atac_heart_1", "atac", "heart", "human", "disease"),
    ("spatial_heart_1", "spatial", "heart", "human", "disease"),
)


def _human_name(i: int) -> str:
    return f"GENE{i:04d}"


def _mouse_name(i: int) -> str:
    return f"Gene{i:04d}"


def toy_gdata(
    *,
    n_modules: int = 6,
    genes_per_module: int = 30,
    datasets: Sequence[tuple[str, str, str, str, str]] = _DEFAULT_DATASETS,
    n_dims: int = 32,
    gene_sd: float = 1.0,
    dataset_sd: float = 0.6,
    n_changed: int = 0,
    changed_condition: str = "disease",
    random_state: int = 0,
) -> AnnData:
    """Simulate gene embeddings with planted modules.

    Parameters
    ----------
    n_modules
        Number of planted modules (``M0``, ``M1``, ...).
    genes_per_module
        Genes per module; gene ``i`` is in module ``i // genes_per_module``.
    datasets
        ``(name, omics, tissue, species, condition)`` of each dataset. Mouse datasets name genes ``Gene0001`` for
        human ``GENE0001``.
    n_dims
        Embedding width.
    gene_sd, dataset_sd
        Typical distance of a gene from its module centre, and of a gene's copies in different datasets from the
        gene (module centres are unit vectors, about 1.4 apart).
    n_changed
        Genes (the first ones of each module, taken in turn) whose embedding in the datasets of
        ``changed_condition`` moves to another module: the planted differentially co-expressed genes.
    changed_condition
        Condition whose datasets carry the changed genes.
    random_state
        Seed.

    Returns
    -------
    AnnData with ``obs['condition']`` and ``obs['true_module']`` in addition to the gdata layout, and
    ``uns['toy_truth']`` with ``modules`` (gene -> module, human names) and ``changed`` (changed genes).

    Examples
    --------
    >>> import musegnn_sc as msg
    >>> gdata = msg.datasets.toy_gdata(n_changed=10)
    >>> gdata.obs[["dataset", "condition"]].value_counts()
    >>> gdata.uns["toy_truth"]["changed"][:3]
    """
    rng = np.random.default_rng(random_state)
    n_genes = n_modules * genes_per_module
    centres = rng.normal(size=(n_modules, n_dims))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    module_of = np.arange(n_genes) // genes_per_module
    genes = rng.normal(scale=gene_sd, size=(n_genes, n_dims)) / np.sqrt(n_dims) + centres[module_of]

    # changed genes: spread over modules so that no module is emptied
    order = np.argsort(np.arange(n_genes) % genes_per_module * n_modules + module_of, kind="stable")
    changed = np.sort(order[:n_changed])
    # a changed gene lands in a different module (any of the others, at random)
    moved_to = (module_of[changed] + 1 + rng.integers(0, n_modules - 1, size=changed.size)) % n_modules
    moved = genes.copy()
    moved[changed] = genes[changed] - centres[module_of[changed]] + centres[moved_to]

    blocks, obs = [], []
    for name, omics, tissue, species, condition in datasets:
        base = moved if condition == changed_condition else genes
        blocks.append(base + rng.normal(scale=dataset_sd, size=base.shape) / np.sqrt(n_dims))
        symbols = [_mouse_name(i) if species == "mouse" else _human_name(i) for i in range(n_genes)]
        true_module = module_of.copy()
        if condition == changed_condition:
            true_module[changed] = moved_to
        obs.append(
            pd.DataFrame(
                {
                    "gene": symbols,
                    "dataset": name,
                    "omics": omics,
                    "tissue": tissue,
                    "species": species,
                    "condition": condition,
                    "is_common": True,
                    "true_module": [f"M{m}" for m in true_module],
                },
                index=[f"{name}:{s}" for s in symbols],
            )
        )
    obs_df = pd.concat(obs)
    for col in ("dataset", "omics", "tissue", "species", "condition", "true_module"):
        obs_df[col] = pd.Categorical(obs_df[col])
    gdata = AnnData(obs=obs_df)
    gdata.obsm[EMBEDDING] = np.vstack(blocks).astype(np.float32)
    gdata.uns[TOY_TRUTH] = {
        "modules": pd.DataFrame(
            {"gene": [_human_name(i) for i in range(n_genes)], "module": [f"M{m}" for m in module_of]}
        ),
        "changed": [_human_name(i) for i in changed],
    }
    return gdata
