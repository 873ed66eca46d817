"""Reading gene sets: GMT files, or mappings a user already has in memory."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def read_gmt(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a GMT file (MSigDB, Enrichr) into ``{set name: [genes]}``.

    Each line is ``name<TAB>description<TAB>gene<TAB>gene...``; the description may be empty (Enrichr) and trailing
    tabs are ignored. Genes keep their file order with duplicates removed; blank lines are skipped.

    Parameters
    ----------
    path
        Path of the GMT file.

    Returns
    -------
    Mapping from set name to its genes, in file order. A name that occurs twice keeps the union of its genes.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"Gene-set file {str(path)!r} does not exist. Pass the path of a GMT file or a dict of gene lists."
        raise FileNotFoundError(msg)
    sets: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 3:
                msg = (
                    f"{path}:{lineno} has {len(fields)} tab-separated field(s); a GMT line needs a name, a "
                    "description (may be empty) and at least one gene, separated by tabs."
                )
                raise ValueError(msg)
            name = fields[0].strip()
            genes = sets.setdefault(name, [])
            seen = set(genes)
            for g in fields[2:]:
                g = g.strip()
                if g and g not in seen:
                    seen.add(g)
                    genes.append(g)
    return sets


def as_gene_sets(gene_sets: str | os.PathLike | Mapping[str, object]) -> dict[str, list[str]]:
    """Accept a GMT path or a mapping of set name to an iterable of genes; return ``{name: [unique genes]}``."""
    if isinstance(gene_sets, str | os.PathLike):
        return read_gmt(gene_sets)
    if not isinstance(gene_sets, Mapping):
        msg = f"`gene_sets` must be a GMT file path or a dict of gene lists, got {type(gene_sets).__name__}."
        raise TypeError(msg)
    out: dict[str, list[str]] = {}
    for name, genes in gene_sets.items():
        if isinstance(genes, str):
            msg = f"Gene set {name!r} is a single string; pass a list of gene names (e.g. `[{genes!r}]`)."
            raise TypeError(msg)
        out[str(name)] = list(dict.fromkeys(str(g) for g in genes))
    return out
