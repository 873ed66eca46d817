"""Reading and writing gene embeddings: Gene2vec, GenePT, scGPT/Geneformer tables and MuSe-GNN's own."""

from ._embedding import read_gene_embedding, write_gene_embedding

__all__ = ["read_gene_embedding", "write_gene_embedding"]
