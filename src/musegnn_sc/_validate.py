"""Input checks shared by every entry point.

Each check raises an error that names the problem and the fix, and none of them modifies its input.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

if TYPE_CHECKING:
    from anndata import AnnData


def get_matrix(adata: AnnData, layer: str | None):
    """Return ``adata.X`` or ``adata.layers[layer]``, with a helpful error for a missing layer."""
    if layer is None:
        if adata.X is None:
            msg = "`adata.X` is empty. Pass `layer=` with the name of the layer that holds raw counts."
            raise ValueError(msg)
        return adata.X
    if layer not in adata.layers:
        avail = ", ".join(repr(k) for k in adata.layers) or "none"
        msg = f"Layer {layer!r} not found in `adata.layers` (available: {avail})."
        raise KeyError(msg)
    return adata.layers[layer]


def _values(X) -> np.ndarray:
    """The stored values of a dense or sparse matrix (no densification)."""
    if sparse.issparse(X):
        return X.data
    return np.asarray(X).ravel()


def check_shape(
    adata: AnnData, *, what: str = "dataset", min_obs: int = 2, purpose: str = "estimate co-expression"
) -> None:
    """Reject empty datasets and datasets with too few cells for the computation (``purpose``)."""
    if adata.n_obs == 0 or adata.n_vars == 0:
        msg = f"The {what} is empty ({adata.n_obs} cells x {adata.n_vars} genes): nothing to compute."
        raise ValueError(msg)
    if adata.n_obs < min_obs:
        msg = (
            f"The {what} has {adata.n_obs} cell(s); at least {min_obs} are needed to {purpose}. "
            "Remove it from the input or merge it with a related dataset."
        )
        raise ValueError(msg)


def check_counts(X, *, layer: str | None, what: str = "raw counts") -> None:
    """Require finite, non-negative integer values, as count models need."""
    vals = _values(X)
    if vals.size == 0:
        return
    if not np.issubdtype(vals.dtype, np.number) or np.issubdtype(vals.dtype, np.complexfloating):
        msg = f"Expected {what} but found values of dtype {vals.dtype}."
        raise TypeError(msg)
    where = "adata.X" if layer is None else f"adata.layers[{layer!r}]"
    if np.issubdtype(vals.dtype, np.floating):
        finite = np.isfinite(vals)
        if not finite.all():
            n_bad = int((~finite).sum())
            msg = (
                f"{where} contains {n_bad} NaN or infinite value(s). {what.capitalize()} must be finite: "
                "check how the matrix was produced, or pass `layer=` with the raw counts."
            )
            raise ValueError(msg)
    if (vals < 0).any():
        msg = (
            f"{where} contains negative values, so it does not hold {what} (it looks normalised or scaled). "
            "Pass `layer=` with the raw counts, e.g. `layer='counts'`."
        )
        raise ValueError(msg)
    if np.issubdtype(vals.dtype, np.floating) and not np.array_equal(vals, np.round(vals)):
        msg = (
            f"{where} contains non-integer values, so it does not hold {what} (it looks normalised or log-transformed). "
            "Pass `layer=` with the raw counts, e.g. `layer='counts'`, or keep a copy of the counts before "
            "`sc.pp.normalize_total` with `adata.layers['counts'] = adata.X.copy()`."
        )
        raise ValueError(msg)


def check_unique_var_names(adata: AnnData, *, what: str = "dataset") -> None:
    """Gene names identify nodes across datasets, so they must be unique."""
    if not adata.var_names.is_unique:
        dup = adata.var_names[adata.var_names.duplicated()].unique()
        shown = ", ".join(map(str, dup[:5])) + (" ..." if len(dup) > 5 else "")
        msg = (
            f"The {what} has {len(dup)} duplicated gene name(s) ({shown}). Gene names identify graph nodes across "
            "datasets: call `adata.var_names_make_unique()` or aggregate duplicated genes first."
        )
        raise ValueError(msg)


def nonzero_cells(depth: np.ndarray, *, what: str = "dataset") -> np.ndarray:
    """Boolean mask of cells with counts; warn about the others, which carry no information."""
    keep = depth > 0
    n_zero = int((~keep).sum())
    if n_zero == len(depth):
        msg = f"Every cell of the {what} has zero total counts: there is nothing to estimate co-expression from."
        raise ValueError(msg)
    if n_zero:
        warnings.warn(
            f"{n_zero} cell(s) of the {what} have zero total counts; they carry no information and are ignored. "
            "Remove them with `sc.pp.filter_cells(adata, min_counts=1)` to silence this warning.",
            UserWarning,
            stacklevel=3,
        )
    return keep


def check_spatial(adata: AnnData, spatial_key: str, *, what: str = "spatial dataset") -> np.ndarray:
    """Return finite 2-D or 3-D coordinates from ``adata.obsm[spatial_key]``."""
    if spatial_key not in adata.obsm:
        avail = ", ".join(repr(k) for k in adata.obsm) or "none"
        msg = (
            f"The {what} has no coordinates in `adata.obsm[{spatial_key!r}]` (obsm keys: {avail}). "
            "Store spot/cell coordinates there (n_obs x 2 array, as squidpy expects) or pass `spatial_key=`; "
            "if the dataset is not spatial, pass `omics='rna'`."
        )
        raise KeyError(msg)
    coords = np.asarray(adata.obsm[spatial_key], dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] not in (2, 3):
        msg = f"`adata.obsm[{spatial_key!r}]` must be an n_obs x 2 (or x 3) array of coordinates, got shape {coords.shape}."
        raise ValueError(msg)
    if not np.isfinite(coords).all():
        msg = f"`adata.obsm[{spatial_key!r}]` contains NaN or infinite coordinates: drop or fix those spots first."
        raise ValueError(msg)
    return coords


def resolve_mods(mdata, mods) -> list[str]:
    """Names of the chosen modalities of a MuData (all by default), checked to exist."""
    names = list(mdata.mod.keys()) if mods is None else ([mods] if isinstance(mods, str) else list(mods))
    unknown = [n for n in names if n not in mdata.mod]
    if unknown:
        msg = f"Modalities {unknown} are not in the MuData (available: {list(mdata.mod.keys())}): check `mods=`."
        raise KeyError(msg)
    if not names:
        msg = "No modality to process: the MuData is empty or `mods` is empty."
        raise ValueError(msg)
    return names
