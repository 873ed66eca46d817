"""CS-CORE's sums over cells and its four Gram products in torch float64, on any torch device (a GPU above all).

Private to :mod:`musegnn_sc.pp._cscore`, which imports this module only when ``device=`` is given, so that
``import musegnn_sc`` never loads torch. The algorithm, its organisation and the order of the work are those of the
numba kernels of :mod:`musegnn_sc.pp._cscore` (see its module docstring): the same blocks of cells are read on the CPU
by the same reader, so host memory does not depend on the number of cells; each block goes to the device as CSR
arrays; the per-depth count tables, the IRLS sums and the products ``P^T P``, ``R^T R`` and ``B^T B`` are computed
there; only length-``p`` vectors (per IRLS step) and the four ``p x p`` products (once) come back. The control flow
of the IRLS (medians, convergence) stays in numpy in the caller, shared with the numba path.

Device memory: the four ``p x p`` products, the two depth tables when they are used (at most
``2 x 2 x chunk_size x p``), one CSR block, and a few dense ``_DEVICE_ROWS x p`` float64 blocks (about 330 MB each
for 5,000 genes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ._cscore import _MEAN, _OLS  # the IRLS steps, shared with the numba path

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

#: Cells densified on the device at a time in the final products, and depth groups per element-wise slice.
_DEVICE_ROWS = 8192

_F64 = torch.float64


def _tensor(a: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``a`` on ``device`` as ``dtype``: moved in its own type, converted there (float32 counts travel as float32).

    On the CPU the tensor may share memory with ``a``; it is only read.
    """
    a = np.ascontiguousarray(a)
    if not a.flags.writeable:  # torch.from_numpy warns on read-only arrays (e.g. views of a backed matrix)
        a = a.copy()
    return torch.from_numpy(a).to(device).to(dtype)


class _DeviceBlock:
    """One block of cells from ``_block_reader``: its counts and column indices on the device, its rows on the host."""

    def __init__(self, piece: tuple, colmap: torch.Tensor, depth: np.ndarray, device: torch.device) -> None:
        data, indices, indptr, ridx, cells = piece
        self.device = device
        self.n_rows = len(ridx)
        self.s = _tensor(depth[cells], device, _F64)
        self._data = _tensor(data, device, _F64)
        self._col = colmap[_tensor(indices, device, torch.int64)]
        self._indptr = np.asarray(indptr, dtype=np.int64)
        self._ridx = np.asarray(ridx)

    def nonzeros(self, lo: int = 0, hi: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows ``lo:hi`` of the block as ``(row - lo, analysed gene, count)`` for the nonzeros of analysed genes."""
        hi = self.n_rows if hi is None else hi
        rows = self._ridx[lo:hi]
        start = self._indptr[rows]
        length = self._indptr[rows + 1] - start
        total = int(length.sum())
        # Per-row arithmetic on the host (O(rows)), per-nonzero work on the device: the position of a nonzero in the
        # CSR arrays is its row's start plus its rank within the row, i.e. its rank among the rows' nonzeros plus
        # the row's (start - first rank).
        offset = start - (np.cumsum(length) - length)
        local = torch.repeat_interleave(
            torch.arange(hi - lo, device=self.device), _tensor(length, self.device, torch.int64), output_size=total
        )
        pos = torch.arange(total, device=self.device) + _tensor(offset, self.device, torch.int64)[local]
        col = self._col[pos]
        keep = col >= 0
        return local[keep], col[keep], self._data[pos[keep]]


class TorchIrls:
    """The device side of :func:`musegnn_sc.pp._cscore.cscore_irls`: IRLS sums, then the four Gram products.

    Parameters
    ----------
    blocks
        Re-iterable source of CSR pieces ``(data, indices, indptr, ridx, cells)`` (``_block_reader``).
    colmap
        Stored column index -> analysed gene (``-1``: not analysed).
    depth
        Depth of every cell.
    u, c, cell_group
        Distinct depths of the cells used, their multiplicities, and the group of every cell (``-1``: unused).
    p
        Number of analysed genes.
    use_tables
        Build the per-depth count tables (one pass) instead of streaming over the cells at every IRLS step.
    device
        The torch device.
    """

    def __init__(
        self,
        blocks: Callable[[], Iterator[tuple]],
        colmap: np.ndarray,
        depth: np.ndarray,
        u: np.ndarray,
        c: np.ndarray,
        cell_group: np.ndarray,
        p: int,
        *,
        use_tables: bool,
        device: torch.device,
    ) -> None:
        self.blocks, self.depth, self.p, self.device = blocks, depth, p, device
        self.use_tables = use_tables
        self.colmap = _tensor(colmap, device, torch.int64)
        self.u = _tensor(u, device, _F64)
        self.c = _tensor(c, device, _F64)
        self.T = self.Q = None
        if use_tables:
            n_groups = len(u)
            T = torch.zeros(n_groups * p, dtype=_F64, device=device)
            Q = torch.zeros(n_groups * p, dtype=_F64, device=device)
            for piece in blocks():
                block = self._block(piece)
                row, col, x = block.nonzeros()
                groups = _tensor(cell_group[piece[4]], device, torch.int64)
                flat = groups[row] * p + col
                T.index_add_(0, flat, x)
                Q.index_add_(0, flat, x * x)
                del block, row, col, x, flat
            self.T, self.Q = T.view(n_groups, p), Q.view(n_groups, p)

    def _block(self, piece: tuple) -> _DeviceBlock:
        return _DeviceBlock(piece, self.colmap, self.depth, self.device)

    def _weight(self, t: torch.Tensor, kappa: float) -> torch.Tensor:
        """``w = t + kappa t^2`` (``t = s mu``), replaced by 1 where not positive."""
        w = t + kappa * t * t
        return torch.where(w > 0, w, 1.0)

    def __call__(self, step: int, mu: np.ndarray, kappa: float) -> np.ndarray:
        """The (5, p) IRLS sums of :class:`musegnn_sc.pp._cscore._IrlsSums`, as numpy."""
        out = torch.zeros((5, self.p), dtype=_F64, device=self.device)
        mu_t = _tensor(mu, self.device, _F64)
        u = self.u
        if step == _OLS and self.use_tables:
            out[0], out[1], out[2] = u @ self.T, (u * u) @ self.Q, (u * u * u) @ self.T
        elif step != _OLS:
            for lo in range(0, len(u), _DEVICE_ROWS):
                s = u[lo : lo + _DEVICE_ROWS, None]
                cs2 = self.c[lo : lo + _DEVICE_ROWS, None] * s * s
                t = s * mu_t
                w = self._weight(t, kappa)
                if step == _MEAN:
                    iw = 1.0 / w
                    out[3] += (cs2 * iw).sum(0)
                    if self.use_tables:
                        out[0] += (s * self.T[lo : lo + _DEVICE_ROWS] * iw).sum(0)
                else:
                    ih = 1.0 / (w * w)
                    out[3] += (cs2 * s * s * ih).sum(0)
                    out[4] += (cs2 * (t * t - t) * ih).sum(0)
                    if self.use_tables:
                        out[1] += (s * s * self.Q[lo : lo + _DEVICE_ROWS] * ih).sum(0)
                        out[2] += (s * s * s * self.T[lo : lo + _DEVICE_ROWS] * ih).sum(0)
        if not self.use_tables:
            for piece in self.blocks():
                block = self._block(piece)
                row, col, x = block.nonzeros()
                s = block.s[row]
                if step == _OLS:
                    out[0].index_add_(0, col, s * x)
                    out[1].index_add_(0, col, s * s * x * x)
                    out[2].index_add_(0, col, s * s * s * x)
                elif step == _MEAN:
                    out[0].index_add_(0, col, s * x / self._weight(s * mu_t[col], kappa))
                else:
                    w = self._weight(s * mu_t[col], kappa)
                    out[1].index_add_(0, col, s * s * x * x / (w * w))
                    out[2].index_add_(0, col, s * s * s * x / (w * w))
                del block, row, col, x, s
        return out.cpu().numpy()

    def release(self) -> None:
        """Free the tables before the final pass."""
        self.T = self.Q = None

    def gram_products(
        self, mu: np.ndarray, sigma: np.ndarray, kappa: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``P^T P``, ``R^T R``, ``B^T B`` and ``B_v^T B_v`` (see ``cscore_irls``), as numpy ``(p, p)`` arrays.

        ``P = s (x - s mu) / w`` and ``R = s (x - s mu) / v`` over the cells, ``v = s mu + s^2 sigma``; ``B`` and
        ``B_v`` are the rows ``sqrt(c) s^2 / w`` and ``sqrt(c) s^2 / v`` over the distinct depths. The products are
        full symmetric matrices (up to rounding): the caller reads their upper triangles.
        """
        p, dev = self.p, self.device
        mu_t, sigma_t = _tensor(mu, dev, _F64), _tensor(sigma, dev, _F64)
        num_cov, num_test, den_cov, den_test = (torch.zeros((p, p), dtype=_F64, device=dev) for _ in range(4))
        for piece in self.blocks():
            block = self._block(piece)
            for lo in range(0, block.n_rows, _DEVICE_ROWS):
                hi = min(lo + _DEVICE_ROWS, block.n_rows)
                row, col, x = block.nonzeros(lo, hi)
                s = block.s[lo:hi, None]
                resid = torch.zeros((hi - lo) * p, dtype=_F64, device=dev)
                resid.index_add_(0, row * p + col, x)  # the counts, densified on the device
                resid = resid.view(hi - lo, p)
                t = s * mu_t
                v = t + s * s * sigma_t
                v = torch.where(v > 0, v, 1.0)
                w = self._weight(t, kappa)
                resid.sub_(t).mul_(s)  # s (x - s mu)
                del t, row, col, x
                P = torch.div(resid, w, out=w)
                num_cov.addmm_(P.T, P)
                R = torch.div(resid, v, out=v)
                num_test.addmm_(R.T, R)
                del P, R, resid, v, w
            del block
        for lo in range(0, len(self.u), _DEVICE_ROWS):
            s = self.u[lo : lo + _DEVICE_ROWS, None]
            a = torch.sqrt(self.c[lo : lo + _DEVICE_ROWS, None]) * s * s
            t = s * mu_t
            v = t + s * s * sigma_t
            B = a / self._weight(t, kappa)
            den_cov.addmm_(B.T, B)
            B = a / torch.where(v > 0, v, 1.0)
            den_test.addmm_(B.T, B)
            del B, t, v
        return tuple(m.cpu().numpy() for m in (num_cov, num_test, den_cov, den_test))
