"""Tools: training MuSe-GNN and analysing gene embeddings."""
