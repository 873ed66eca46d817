"""`enrichment` says why nothing matched when gene sets and embedded genes use different identifiers."""

from __future__ import annotations

import pytest

import musegnn_sc as msg


@pytest.fixture(scope="module")
def gdata():
    g = msg.datasets.toy_gdata(n_modules=3, genes_per_module=10, random_state=0)
    g.obs["leiden"] = g.obs["true_module"]
    return g


def test_ensembl_ids_are_named(gdata):
    sets = {"S1": [f"ENSG{k:011d}" for k in range(20)]}
    with pytest.warns(UserWarning, match=r"No gene of any of the 1 gene set.*identifier type.*Ensembl"):
        res = msg.tl.enrichment(gdata, sets, min_size=2)
    assert res.empty


def test_mouse_capitalisation_is_named(gdata):
    sets = {"S1": [f"Gene{k:04d}" for k in range(20)], "S2": ["Gapdh", "Actb"]}
    with pytest.warns(UserWarning, match=r"species.*mouse-style"):
        res = msg.tl.enrichment(gdata, sets, min_size=2)
    assert res.empty


def test_matching_sets_do_not_warn(gdata):
    sets = {"S1": [f"GENE{k:04d}" for k in range(10)]}
    res = msg.tl.enrichment(gdata, sets, min_size=2)
    assert (res.loc[res["module"] == "M0", "fdr"] < 0.01).all()


def test_coherence_logs_the_cause_when_nothing_matches(gdata, caplog):
    import logging

    logger = logging.getLogger("musegnn_sc")
    logger.addHandler(caplog.handler)
    try:
        res = msg.tl.gene_set_coherence(gdata, {"S1": [f"Gene{k:04d}" for k in range(10)]})
    finally:
        logger.removeHandler(caplog.handler)
    assert res.empty
    assert any("species" in r.getMessage() and "mouse-style" in r.getMessage() for r in caplog.records)
