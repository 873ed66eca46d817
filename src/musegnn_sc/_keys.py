"""Every storage key of the package, in one place.

Public functions take a ``key_added`` prefix and derive the names they write from it here, so a reader can find
where any slot comes from, and the model reads exactly the slots the graph builder wrote.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Default prefix of everything :func:`musegnn_sc.pp.build_coexpression_graph` writes.
COEXPRESSION = "coexpression"
#: ``adata.obsm`` key of spatial coordinates (squidpy's convention).
SPATIAL = "spatial"
#: ``adata.uns`` key written by :func:`musegnn_sc.pp.gene_activity` (it marks an AnnData as ATAC gene activity).
GENE_ACTIVITY = "gene_activity"
#: ``adata.uns`` key a user (or :func:`musegnn_sc.datasets.toy_mudata`) may set to declare a dataset's data type.
OMICS = "omics"
#: The data types MuSe-GNN knows.
OMICS_TYPES = ("rna", "atac", "spatial")
#: Gene-level embedding written by the model.
EMBEDDING = "X_musegnn"


@dataclass(frozen=True)
class GraphKeys:
    """Names of the slots of one co-expression graph with prefix ``key``.

    Mirrors :func:`scanpy.pp.neighbors`: ``uns[key]`` records the other names and the parameters.
    """

    key: str = COEXPRESSION

    @property
    def uns(self) -> str:
        """``adata.uns`` entry with ``params`` and the names below."""
        return self.key

    @property
    def connectivities(self) -> str:
        """``adata.varp``: binary sparse adjacency, 1 where the CS-CORE p-value is below the cutoff."""
        return f"{self.key}_connectivities"

    @property
    def correlation(self) -> str:
        """``adata.varp``: CS-CORE correlation on the edges of the graph."""
        return f"{self.key}_correlation"

    @property
    def gene(self) -> str:
        """``adata.var``: boolean, the gene is a node of the graph."""
        return f"{self.key}_gene"

    @property
    def features(self) -> str:
        """``adata.varm``: node features (zero rows for genes outside the graph)."""
        return f"{self.key}_features"

    @property
    def selection_rank(self) -> str:
        """``adata.var``: rank of the gene in the selection (0 = most variable), NaN if not selected."""
        return f"{self.key}_rank"

    @property
    def selection_score(self) -> str:
        """``adata.var``: score used to select genes (residual variance, or -log10 SPARK-X p-value, or Moran's I)."""
        return f"{self.key}_score"


#: ``adata.uns`` keys describing a dataset (read by the graph builder and the model when not passed explicitly).
TISSUE = "tissue"
SPECIES = "species"
