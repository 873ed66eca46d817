"""Analytic Pearson residuals (Lause, Berens & Kobak 2021): gene selection and node features.

Under the offset model the expected count of gene ``g`` in cell ``c`` is ``mu_cg = depth_c * gene_sum_g / total`` and the
negative-binomial variance with a shared overdispersion ``theta`` is ``mu + mu**2 / theta``. The Pearson residual
``(x - mu) / sqrt(mu + mu**2 / theta)``, clipped to ``[-clip, clip]``, is the depth-robust stand-in for SCTransform that
scanpy ships as ``sc.experimental.pp.normalize_pearson_residuals``.

Every function reads the counts a block of cells at a time, so memory is bounded by the block (and, for the node
features, by one ``n_genes x n_genes`` matrix), never by the number of cells. Where ``mu`` is zero (a cell or gene
without counts) the residual is set to its limit, 0, instead of 0/0.
"""

from __future__ import annotations

import warnings
from typing import Literal, NamedTuple

import numpy as np

from musegnn_sc._chunks import iter_row_chunks

#: Target number of values in one dense block of residuals (32 MB in float64) when ``chunk_size`` is ``None``.
_BLOCK_VALUES = 1 << 22


class GeneSelection(NamedTuple):
    """Result of :func:`select_highly_variable`."""

    #: Column indices of the selected genes, most variable first.
    indices: np.ndarray
    #: Residual variance of every gene (0 for genes without counts).
    scores: np.ndarray
    #: Rank of every gene in the selection (0 = most variable), NaN for genes not selected.
    ranks: np.ndarray


def _block_rows(chunk_size: int | None, n_cols: int) -> int:
    if chunk_size is not None:
        if int(chunk_size) < 1:
            msg = f"`chunk_size` must be a positive number of cells, got {chunk_size}."
            raise ValueError(msg)
        return int(chunk_size)
    return max(64, _BLOCK_VALUES // max(n_cols, 1))


def _check_theta(theta: float) -> float:
    theta = float(theta)
    if not theta > 0:
        msg = f"`theta` must be positive (the negative-binomial overdispersion; 100 is the usual choice), got {theta}."
        raise ValueError(msg)
    return theta


def _resolve_clip(clip: float | str | None, n_cells: int, *, allow_sctransform: bool) -> float:
    """``None``: sqrt(n) as scanpy; ``"sctransform"``: sqrt(n / 30) as Seurat's ``scale.data``; or a number."""
    if clip is None:
        return float(np.sqrt(n_cells))
    if isinstance(clip, str):
        if allow_sctransform and clip == "sctransform":
            return float(np.sqrt(n_cells / 30))
        choices = (
            "'sctransform', a non-negative number or None" if allow_sctransform else "a non-negative number or None"
        )
        msg = f"`clip` must be {choices}, got {clip!r}."
        raise ValueError(msg)
    clip = float(clip)
    if not clip >= 0:
        msg = f"`clip` must be non-negative (residuals are clipped to [-clip, clip]), got {clip}."
        raise ValueError(msg)
    return clip


def _rows_mask(rows: np.ndarray | None, n_obs: int) -> np.ndarray:
    if rows is None:
        return np.ones(n_obs, dtype=bool)
    rows = np.asarray(rows)
    if rows.dtype != bool or rows.shape != (n_obs,):
        msg = f"`rows` must be a boolean mask with one entry per cell ({n_obs}), got dtype {rows.dtype}, shape {rows.shape}."
        raise ValueError(msg)
    return rows


def _offsets(X, depth, gene_sums, total, rows: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Fill in the offset-model margins that were not given, from the cells in ``rows``."""
    n_obs, n_vars = X.shape
    if depth is None or gene_sums is None:
        d = np.zeros(n_obs)
        g = np.zeros(n_vars)
        for idx, block in iter_row_chunks(X, chunk, rows=rows, dense=False):
            d[idx] = np.asarray(block.sum(axis=1)).ravel()
            g += np.asarray(block.sum(axis=0)).ravel()
        depth = d if depth is None else depth
        gene_sums = g if gene_sums is None else gene_sums
    depth = np.asarray(depth, dtype=np.float64).ravel()
    gene_sums = np.asarray(gene_sums, dtype=np.float64).ravel()
    if depth.shape != (n_obs,):
        msg = f"`depth` must have one entry per cell ({n_obs}), got shape {depth.shape}."
        raise ValueError(msg)
    if gene_sums.shape != (n_vars,):
        msg = f"`gene_sums` must have one entry per column of `X` ({n_vars}), got shape {gene_sums.shape}."
        raise ValueError(msg)
    total = float(depth[rows].sum()) if total is None else float(total)
    if not total > 0:
        msg = "The counts sum to zero: Pearson residuals need at least one nonzero count."
        raise ValueError(msg)
    return depth, gene_sums, total


def _residual_block(x: np.ndarray, depth: np.ndarray, frac: np.ndarray, theta: float, clip: float) -> np.ndarray:
    """Clipped residuals of a dense block ``x`` (cells x genes), in a new array (``x`` is left as it is)."""
    mu = np.multiply.outer(depth, frac)
    sd = mu * mu
    sd /= theta
    sd += mu
    np.sqrt(sd, out=sd)
    if not (depth.all() and frac.all()):
        # mu == 0 only where x == 0 (no counts in the cell or the gene): the residual's limit there is 0.
        sd[sd == 0] = 1.0
    r = np.subtract(x, mu, out=mu)
    r /= sd
    np.clip(r, -clip, clip, out=r)
    return r


def residual_variances(
    X,
    *,
    depth: np.ndarray | None = None,
    gene_sums: np.ndarray | None = None,
    total: float | None = None,
    theta: float = 100.0,
    clip: float | None = None,
    rows: np.ndarray | None = None,
    chunk_size: int | None = None,
) -> np.ndarray:
    """Variance over cells of each gene's clipped analytic Pearson residuals.

    Equals ``var['residual_variances']`` of ``sc.experimental.pp.highly_variable_genes(flavor="pearson_residuals")``
    (population variance, ``ddof=0``).

    Parameters
    ----------
    X
        Raw counts, cells x genes: dense, scipy sparse, or a backed matrix.
    depth
        Total counts per cell (one entry per row of ``X``); ``None`` sums the columns of ``X``.
    gene_sums
        Total counts per gene over the cells used (one entry per column of ``X``); ``None`` sums them.
    total
        Sum of all counts of the cells used; ``None`` sums ``depth`` over them.
    theta
        Negative-binomial overdispersion shared by all genes.
    clip
        Residuals are clipped to ``[-clip, clip]``; ``None`` uses ``sqrt(n_cells)``.
    rows
        Boolean mask of the cells to use; ``None`` uses all.
    chunk_size
        Cells per block; ``None`` picks blocks of about four million values. Results do not depend on it.

    Returns
    -------
    Residual variance per column of ``X``; 0 for genes without counts.
    """
    theta = _check_theta(theta)
    n_obs, n_vars = X.shape
    rows = _rows_mask(rows, n_obs)
    n_cells = int(rows.sum())
    clip = _resolve_clip(clip, n_cells, allow_sctransform=False)
    chunk = _block_rows(chunk_size, n_vars)
    depth, gene_sums, total = _offsets(X, depth, gene_sums, total, rows, chunk)
    expressed = np.flatnonzero(gene_sums > 0)
    out = np.zeros(n_vars)
    if n_cells == 0 or len(expressed) == 0:
        return out
    frac = gene_sums[expressed] / total
    chunk = _block_rows(chunk_size, len(expressed))
    # Chan et al.'s pairwise update of (count, mean, sum of squared deviations): exact like scanpy's two passes over
    # the cells, but in one pass over the blocks.
    n_seen = 0
    mean = np.zeros(len(expressed))
    m2 = np.zeros(len(expressed))
    cols = None if len(expressed) == n_vars else expressed
    for idx, block in iter_row_chunks(X, chunk, cols=cols, rows=rows):
        r = _residual_block(block, depth[idx], frac, theta, clip)
        nb = r.shape[0]
        mb = r.mean(axis=0)
        r -= mb
        m2b = np.einsum("ij,ij->j", r, r)
        n_new = n_seen + nb
        delta = mb - mean
        mean += delta * (nb / n_new)
        m2 += m2b + delta * delta * (n_seen * nb / n_new)
        n_seen = n_new
    out[expressed] = m2 / n_seen
    return out


def select_highly_variable(
    X,
    *,
    n_top_genes: int,
    theta: float = 100.0,
    clip: float | None = None,
    depth: np.ndarray | None = None,
    gene_sums: np.ndarray | None = None,
    total: float | None = None,
    rows: np.ndarray | None = None,
    chunk_size: int | None = None,
) -> GeneSelection:
    """Select the genes with the largest residual variance, as scanpy's ``pearson_residuals`` flavor.

    Genes without counts are never selected. When fewer genes have counts than ``n_top_genes``, all of them are
    selected, with a warning. Ties are broken by column order.

    Parameters
    ----------
    X
        Raw counts, cells x genes.
    n_top_genes
        Number of genes to select.
    theta, clip, depth, gene_sums, total, rows, chunk_size
        As in :func:`residual_variances`.

    Returns
    -------
    The selected column indices (most variable first), every gene's residual variance, and every gene's rank in the
    selection (NaN when not selected).
    """
    if isinstance(n_top_genes, bool) or not isinstance(n_top_genes, int | np.integer) or n_top_genes < 1:
        msg = f"`n_top_genes` must be a positive integer, got {n_top_genes!r}."
        raise ValueError(msg)
    n_obs, n_vars = X.shape
    rows = _rows_mask(rows, n_obs)
    depth, gene_sums, total = _offsets(X, depth, gene_sums, total, rows, _block_rows(chunk_size, n_vars))
    scores = residual_variances(
        X,
        depth=depth,
        gene_sums=gene_sums,
        total=total,
        theta=theta,
        clip=clip,
        rows=rows,
        chunk_size=chunk_size,
    )
    expressed = np.flatnonzero(gene_sums > 0)
    n_expr = len(expressed)
    if n_expr < n_top_genes:
        warnings.warn(
            f"Only {n_expr} gene(s) have nonzero counts, fewer than `n_top_genes={n_top_genes}`: all {n_expr} "
            f"expressed genes are used. Pass `n_top_genes={n_expr}` or less to silence this warning.",
            UserWarning,
            stacklevel=2,
        )
    order = expressed[np.argsort(-scores[expressed], kind="stable")]
    indices = order[:n_top_genes]
    ranks = np.full(n_vars, np.nan)
    ranks[indices] = np.arange(len(indices), dtype=np.float64)
    return GeneSelection(indices=indices, scores=scores, ranks=ranks)


def _symmetric_top(gram: np.ndarray, k: int) -> np.ndarray:
    """``V * sqrt(lambda)`` for the top-``k`` eigenpairs of a PSD matrix, zero columns beyond its numerical rank."""
    p = gram.shape[0]
    out = np.zeros((p, k))
    if p == 0 or k == 0:
        return out
    lam, vec = np.linalg.eigh(gram)
    lam, vec = lam[::-1], vec[:, ::-1]
    keep = min(k, p)
    lam, vec = lam[:keep], vec[:, :keep]
    # Below this, eigenvalues are rounding noise of a rank-deficient Gram (fewer cells than genes): their
    # eigenvectors are arbitrary, so they become the zero padding.
    tol = max(lam[0], 0.0) * p * np.finfo(np.float64).eps * 10
    rank = int((lam > tol).sum())
    vec = vec[:, :rank]
    # Sign convention: the largest-magnitude entry of each eigenvector is positive.
    pivot = vec[np.argmax(np.abs(vec), axis=0), np.arange(rank)]
    vec = vec * np.where(pivot < 0, -1.0, 1.0)
    out[:, :rank] = vec * np.sqrt(lam[:rank])
    return out


def residual_features(
    X,
    cols: np.ndarray,
    *,
    depth: np.ndarray | None = None,
    gene_sums: np.ndarray | None = None,
    total: float | None = None,
    theta: float = 100.0,
    clip: float | Literal["sctransform"] | None = "sctransform",
    center: bool = True,
    n_components: int | None = 128,
    rows: np.ndarray | None = None,
    chunk_size: int | None = None,
) -> np.ndarray:
    """Node features: each selected gene's Pearson-residual profile over cells, optionally reduced to a fixed width.

    The profile mimics Seurat's ``SCTransform`` ``scale.data`` (residuals clipped to ``sqrt(n_cells / 30)``, then
    centred per gene), with analytic residuals in place of the per-gene GLM. The reduction is the truncated SVD of the
    genes x cells profile matrix ``G``, obtained from ``G @ G.T`` accumulated over blocks of cells: the features are
    ``V * sqrt(lambda)`` for its top eigenpairs, so inner products between genes (``G @ G.T``) are kept exactly when
    ``n_components`` is at least the rank of ``G``, and best approximated in rank ``n_components`` otherwise.

    Parameters
    ----------
    X
        Raw counts, cells x genes.
    cols
        Column indices of the genes to describe.
    depth, gene_sums, total, theta, rows, chunk_size
        As in :func:`residual_variances` (``depth`` and ``gene_sums`` cover all rows and columns of ``X``).
    clip
        ``"sctransform"``: ``sqrt(n_cells / 30)`` as Seurat; a number; or ``None`` for ``sqrt(n_cells)`` as scanpy.
    center
        Subtract each gene's mean residual (after clipping), as Seurat's ``do.center``.
    n_components
        Width of the features; columns beyond the rank of ``G`` are zero. ``None`` returns ``G`` itself.

    Returns
    -------
    Array of shape ``len(cols) x n_components``, or ``len(cols) x n_cells`` (cells in ``rows``) if ``n_components`` is
    ``None``.
    """
    theta = _check_theta(theta)
    n_obs, n_vars = X.shape
    cols = np.asarray(cols, dtype=np.intp).ravel()
    if len(cols) and (cols.min() < -n_vars or cols.max() >= n_vars):
        msg = f"`cols` must index the {n_vars} columns of `X`."
        raise IndexError(msg)
    cols = cols % max(n_vars, 1)
    if n_components is not None and (isinstance(n_components, bool) or int(n_components) < 1):
        msg = f"`n_components` must be a positive integer or None, got {n_components!r}."
        raise ValueError(msg)
    rows = _rows_mask(rows, n_obs)
    n_cells = int(rows.sum())
    clip = _resolve_clip(clip, n_cells, allow_sctransform=True)
    p = len(cols)
    chunk = _block_rows(chunk_size, max(p, 1))
    depth, gene_sums, total = _offsets(X, depth, gene_sums, total, rows, _block_rows(chunk_size, n_vars))
    frac = gene_sums[cols] / total
    if p == 0 or n_cells == 0:
        return np.zeros((p, n_cells if n_components is None else int(n_components)))

    if n_components is None:
        out = np.empty((p, n_cells))
        pos = np.cumsum(rows) - 1
        for idx, block in iter_row_chunks(X, chunk, cols=cols, rows=rows):
            out[:, pos[idx]] = _residual_block(block, depth[idx], frac, theta, clip).T
        if center:
            out -= out.mean(axis=1, keepdims=True)
        return out

    # Co-moment matrix sum_c (r_c - m)(r_c - m)^T, combined across blocks with Chan et al.'s update, which avoids
    # the cancellation of sum_c r_c r_c^T - n m m^T.
    n_seen = 0
    mean = np.zeros(p)
    gram = np.zeros((p, p))
    for idx, block in iter_row_chunks(X, chunk, cols=cols, rows=rows):
        r = _residual_block(block, depth[idx], frac, theta, clip)
        nb = r.shape[0]
        mb = r.mean(axis=0)
        if center:
            r -= mb
        gram += r.T @ r
        if center:
            n_new = n_seen + nb
            delta = mb - mean
            mean += delta * (nb / n_new)
            gram += np.multiply.outer(delta, delta) * (n_seen * nb / n_new)
            n_seen = n_new
    gram = (gram + gram.T) / 2
    return _symmetric_top(gram, int(n_components))
