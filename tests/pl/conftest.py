from __future__ import annotations

import matplotlib

matplotlib.use("agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from musegnn_sc.datasets import toy_gdata


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def gdata():
    """Toy gene embeddings with modules and a 2-D layout (PCA stands in for UMAP to keep the tests fast)."""
    g = toy_gdata(n_modules=4, genes_per_module=15, random_state=0)
    emb = g.obsm["X_musegnn"] - g.obsm["X_musegnn"].mean(axis=0)
    _, _, vt = np.linalg.svd(emb, full_matrices=False)
    g.obsm["X_umap"] = emb @ vt[:2].T
    g.obs["leiden"] = g.obs["true_module"].cat.rename_categories(lambda c: c[1:])
    return g
