"""Row-chunked access to count matrices.

Every CS-CORE and Pearson-residual sum runs over cells, so the kernels read the matrix a block of cells at a time.
``X`` may be a dense array, a scipy sparse matrix, a backed AnnData matrix (``h5py.Dataset`` or anndata's sparse
dataset), or any object with a ``shape`` and row slicing ``X[start:stop]`` that returns one of those (for example a
simulator that generates cells on the fly).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy import sparse

#: Default number of cells per block: 8k x 1k genes x 8 bytes = 64 MB per dense float64 block.
DEFAULT_CHUNK_SIZE = 8192


def _to_dense(block, dtype) -> np.ndarray:
    if sparse.issparse(block):
        return block.toarray().astype(dtype, copy=False)
    return np.asarray(block, dtype=dtype)


def _prepare(X, cols):
    """Convert column-major sparse input once, so that row blocks are cheap."""
    if sparse.issparse(X) and X.format != "csr":
        X = X[:, cols] if cols is not None else X
        return sparse.csr_matrix(X), None
    return X, cols


def iter_row_chunks(
    X,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
    *,
    cols: np.ndarray | None = None,
    rows: np.ndarray | None = None,
    dtype=np.float64,
    dense: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray | sparse.csr_matrix]]:
    """Yield ``(row_mask_or_index, block)`` for consecutive blocks of cells.

    Parameters
    ----------
    X
        Cells x genes matrix (see the module docstring for accepted types).
    chunk_size
        Cells per block; ``None`` reads everything at once.
    cols
        Integer indices of the genes to keep.
    rows
        Boolean mask over all cells; cells outside it are dropped from every block.
    dtype
        dtype of dense blocks.
    dense
        Yield dense arrays (otherwise sparse blocks stay sparse, as CSR).

    Yields
    ------
    The indices (into all cells) of the block's rows, and the block.
    """
    n = X.shape[0]
    X, cols = _prepare(X, cols)
    step = n if chunk_size is None else max(int(chunk_size), 1)
    for start in range(0, n, step):
        stop = min(start + step, n)
        block = X[start:stop]
        if cols is not None:
            block = block[:, cols]
        idx = np.arange(start, stop)
        if rows is not None:
            keep = np.asarray(rows[start:stop], dtype=bool)
            if not keep.all():
                block = block[keep]
                idx = idx[keep]
        if len(idx) == 0:
            continue
        if dense:
            block = _to_dense(block, dtype)
        elif sparse.issparse(block):
            block = sparse.csr_matrix(block)
        else:
            block = np.asarray(block, dtype=dtype)
        yield idx, block


def row_sums(X, chunk_size: int | None = DEFAULT_CHUNK_SIZE) -> np.ndarray:
    """Total counts per cell over all genes, float64, read in blocks of cells."""
    if sparse.issparse(X):
        return np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()
    if isinstance(X, np.ndarray):
        return X.sum(axis=1, dtype=np.float64)
    out = np.empty(X.shape[0], dtype=np.float64)
    for idx, block in iter_row_chunks(X, chunk_size, dense=False):
        out[idx] = np.asarray(block.sum(axis=1, dtype=np.float64)).ravel()
    return out
