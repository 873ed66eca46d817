"""Simulated unpaired single-cell datasets with planted gene modules: the package's demo and test data.

Counts follow the usual generative picture of UMI data: a cell's expected count of a gene is its size factor times
the gene's baseline times ``exp(loading * factor)``, where the factor is a latent cell state shared by every gene of a
module (which is what makes the module's genes co-expressed), and counts are gamma-Poisson (negative binomial) around
that mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import mudata as md
import numpy as np
import pandas as pd
from anndata import AnnData
from mudata import MuData
from scipy import sparse

from musegnn_sc._keys import OMICS, SPATIAL, SPECIES, TISSUE

#: ``mdata.uns`` key of the ground truth written by :func:`toy_mudata`.
TRUTH_KEY = "toy_truth"
#: Name of the background "module" (genes whose counts share no latent factor).
NO_MODULE = "none"
#: Loadings of module genes, and of the planted hub genes (``toy_mudata(n_hubs=...)``), before the per-dataset
#: jitter: hubs load clearly more on their module's factor than any other gene of the module.
MODULE_LOADING = (0.5, 0.9)
HUB_LOADING = (1.3, 1.5)

# Per data type: dataset-level depth scale, sd of the log size factors, median gene dispersion (theta of the
# negative binomial, smaller = more overdispersed) and a baseline shift. Gene activity from ATAC is sparser and
# noisier than RNA; spatial spots pool several cells, so they have more counts per spot.
_PROFILES = {
    "rna": {"depth": 1.0, "depth_sd": 0.5, "theta": 6.0, "shift": 0.0},
    "atac": {"depth": 0.5, "depth_sd": 0.6, "theta": 3.0, "shift": -0.3},
    "spatial": {"depth": 2.0, "depth_sd": 0.4, "theta": 4.0, "shift": 0.0},
}


@dataclass(frozen=True)
class _Dataset:
    name: str
    omics: str
    tissue: str
    species: str


@dataclass(frozen=True)
class _Module:
    name: str
    kind: str  # "shared" (every dataset), "partial" (several, not all) or "specific" (one)
    datasets: tuple[str, ...]
    pattern: str | None  # spatial pattern of the factor in spatial datasets, None = not spatially structured


def _datasets(n_rna: int, include_mouse: bool, include_atac: bool, include_spatial: bool) -> list[_Dataset]:
    out = []
    seen: dict[str, int] = {}
    for i in range(n_rna):
        # heart, heart, lung, heart, heart, lung, ...: two tissues, several donors of the first
        tissue = "lung" if i % 3 == 2 else "heart"
        seen[tissue] = seen.get(tissue, 0) + 1
        out.append(_Dataset(f"rna_{tissue}_{seen[tissue]}", "rna", tissue, "human"))
    if include_mouse:
        out.append(_Dataset("rna_heart_mouse", "rna", "heart", "mouse"))
    if include_atac:
        out.append(_Dataset("atac_heart_1", "atac", "heart", "human"))
    if include_spatial:
        out.append(_Dataset("spatial_brain_1", "spatial", "brain", "human"))
    return out


def _modules(datasets: list[_Dataset], n_modules: int) -> list[_Module]:
    """Assign each module the datasets where its genes are co-expressed.

    From the end: one module specific to the spatial dataset (spatially patterned), one specific to the first lung
    dataset, one shared by the heart datasets only; every other module is shared by all datasets, and the first of
    them is also spatially patterned in the spatial dataset.
    """
    names = [d.name for d in datasets]
    special: list[tuple[str, tuple[str, ...], str | None]] = []
    heart = tuple(d.name for d in datasets if d.tissue == "heart")
    if 2 <= len(heart) < len(datasets):
        special.append(("partial", heart, None))
    lung = [d.name for d in datasets if d.tissue == "lung"]
    if lung:
        special.append(("specific", (lung[0],), None))
    spatial = [d.name for d in datasets if d.omics == "spatial"]
    if spatial:
        special.append(("specific", (spatial[0],), "waves"))
    n_shared = n_modules - len(special)
    if n_shared < 1:
        msg = (
            f"`n_modules={n_modules}` is too small for the chosen datasets: {len(special)} module(s) are dataset- or "
            f"tissue-specific and at least one must be shared by all datasets. Use `n_modules>={len(special) + 1}`."
        )
        raise ValueError(msg)
    roles = [("shared", tuple(names), "radial" if i == 0 else None) for i in range(n_shared)] + special
    return [_Module(f"M{i + 1}", kind, ds, pattern) for i, (kind, ds, pattern) in enumerate(roles)]


def _grid_coordinates(rng: np.random.Generator, n: int, spacing: float = 100.0) -> np.ndarray:
    """A jittered square grid of ``n`` spots, as in array-based spatial transcriptomics."""
    side = int(np.ceil(np.sqrt(n)))
    ix, iy = np.divmod(np.arange(n), side)
    coords = np.column_stack([ix, iy]).astype(np.float64) * spacing
    return coords + rng.uniform(-0.2 * spacing, 0.2 * spacing, size=coords.shape)


def _spatial_pattern(kind: str, coords: np.ndarray) -> np.ndarray:
    """A smooth standardised function of the coordinates."""
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    u = (coords - lo) / np.maximum(hi - lo, 1e-12)
    if kind == "radial":
        f = np.exp(-((u[:, 0] - 0.3) ** 2 + (u[:, 1] - 0.35) ** 2) / (2 * 0.2**2))
    else:
        f = np.cos(2 * np.pi * u[:, 0]) + np.sin(np.pi * u[:, 1])
    return (f - f.mean()) / f.std()


def _nb_counts(rng: np.random.Generator, mu: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Gamma-Poisson (negative binomial) counts with mean ``mu`` and variance ``mu + mu**2 / theta``."""
    return rng.poisson(rng.gamma(shape=theta, scale=mu / theta))


def _gene_names(prefix: str, idx: np.ndarray, width: int) -> np.ndarray:
    return np.array([f"{prefix}{i:0{width}d}" for i in idx], dtype=object)


def toy_mudata(
    *,
    n_cells: int = 400,
    n_genes: int = 500,
    n_modules: int = 6,
    module_size: int = 20,
    n_rna: int = 3,
    include_mouse: bool = True,
    include_atac: bool = True,
    include_spatial: bool = True,
    n_samples: int = 0,
    condition_effect: float = 1.0,
    n_hubs: int = 0,
    seed: int = 0,
) -> MuData:
    """Simulate unpaired single-cell datasets with planted gene modules shared across some of them.

    One modality per dataset, named ``{omics}_{tissue}_{id}``: ``n_rna`` human RNA datasets (tissues heart, heart,
    lung, heart, ...: ``rna_heart_1``, ``rna_heart_2``, ``rna_lung_1``), a mouse heart RNA dataset
    (``rna_heart_mouse``), an ATAC gene-activity dataset (``atac_heart_1``, sparser, lower and more overdispersed
    counts) and a spatial dataset (``spatial_brain_1``, spots on a jittered grid in ``obsm['spatial']``).

    Counts of gene ``g`` in cell ``c`` are negative binomial with mean
    ``s_c * exp(b_g + l_g * f_c[m(g)] - l_g**2 / 2)``: log-normal size factors ``s_c`` (sd 0.4-0.6 on the log
    scale), a gene baseline ``b_g``, and for genes of module ``m(g)`` a loading ``l_g`` in 0.5-0.9 on a standard
    normal cell factor ``f_c[m]`` shared by the module's genes (in the spatial dataset some factors are smooth
    functions of the coordinates), times a per-dataset jitter in 0.8-1.2. With ``n_hubs``, that many genes of every
    module are hub genes: loadings in 1.3-1.5 (jitter 0.9-1.1, so 1.17-1.65 against at most 1.08 for the other
    module genes) and a baseline in the top 5% of the module genes' baselines (well expressed, so that their counts
    show their loading). Modules, from ``M1``:

    - all but the last three are shared by every dataset (same genes, orthologues in mouse), ``M1`` being spatially
      patterned (a radial hotspot) in the spatial dataset;
    - one is co-expressed in the heart datasets only (its genes are present, without co-expression, elsewhere);
    - one is specific to ``rna_lung_1`` and one to ``spatial_brain_1`` (spatial waves), with genes found in that
      dataset only.

    (Roles whose dataset is not included are left out, and the modules are shared instead.) With ``n_samples``,
    the cells of every dataset come from ``n_samples`` samples (``obs['sample']``), the first half controls and the
    others stimulated (``obs['condition']``: ``'ctrl'``, ``'stim'``); in stimulated cells the factor of one shared
    module (``M2``, or ``M1`` when it is the only one) is raised by ``condition_effect``, and each sample adds its
    own offset (sd 0.3) to that factor, as biological replicates do. These draws use their own random stream, so
    every other value is the same as without samples (hub genes likewise draw from their own stream: with
    ``n_hubs=0``, the default, the data are those of versions without hubs). Other genes are
    background: common to all datasets, or drawn per dataset from a pool, so genes are shared by all, several or one
    dataset. The mouse dataset uses mouse-style names of orthologous genes (``GENE0042`` -> ``Gene0042``) plus
    mouse-only genes (``Gm0007``); some human genes have no orthologue.

    Parameters
    ----------
    n_cells
        Cells (spots) per dataset.
    n_genes
        Genes per dataset.
    n_modules
        Number of planted modules, at least one more than the number of specific modules (3 with every dataset).
    module_size
        Genes per module.
    n_rna
        Number of human RNA datasets.
    include_mouse
        Add the mouse RNA dataset.
    include_atac
        Add the ATAC gene-activity dataset.
    include_spatial
        Add the spatial dataset.
    n_samples
        Samples per dataset (0: no samples, no condition); at least 2 otherwise.
    condition_effect
        Shift of the condition module's factor in stimulated cells (with ``n_samples``).
    n_hubs
        Hub genes planted per module (0: none, every module gene loads 0.5-0.9 on its factor); fewer than
        ``module_size``. They are recorded in ``toy_truth['genes']['is_hub']`` and are the same genes (and their
        mouse orthologues) in every dataset where the module is co-expressed.
    seed
        Random seed; equal seeds give identical objects.

    Returns
    -------
    MuData with ``axis=1`` (datasets share genes, not cells; cell names are prefixed with the dataset name). Each
    modality holds raw counts in ``X`` (CSR, float32, integer-valued; there is no ``counts`` layer),
    ``var['module']`` (``'M1'``, ..., or ``'none'``), ``uns['omics']``, ``uns['tissue']`` and ``uns['species']``;
    the spatial one also ``obsm['spatial']`` and ``var['spatial_pattern']``. ``mdata.uns['toy_truth']`` holds the
    ground truth: ``genes`` (one row per dataset and gene: dataset, gene, human_gene, module, module_kind,
    spatial_pattern), ``modules`` (module, kind, datasets, n_genes, spatial_pattern), ``orthologs`` (human, mouse)
    and ``params``, plus ``activity`` (``{dataset: DataFrame}``, cells x modules active there: the planted cell
    factor ``f_c[m]`` of each module, the per-cell module activity), a ``loading`` column in ``genes`` (the
    gene's loading ``l_g`` on its module's factor in that dataset, 0 for background genes) and an ``is_hub`` column
    (the planted hub genes of ``n_hubs``, in the datasets where their module is co-expressed; all ``False`` without
    ``n_hubs``). With ``n_samples``, each modality's ``obs`` has ``sample`` and ``condition``, and the truth holds
    ``condition`` (``module``, ``effect``).

    Examples
    --------
    >>> import musegnn_sc as msg
    >>> mdata = msg.datasets.toy_mudata()
    >>> list(mdata.mod)
    ['rna_heart_1', 'rna_heart_2', 'rna_lung_1', 'rna_heart_mouse', 'atac_heart_1', 'spatial_brain_1']

    Three planted hub genes per module, the ground truth of :func:`~musegnn_sc.tl.hub_genes`:

    >>> mdata = msg.datasets.toy_mudata(n_hubs=3)
    >>> truth = mdata.uns["toy_truth"]["genes"]
    >>> int(truth.query("dataset == 'rna_heart_1'")["is_hub"].sum())  # modules M1-M4 are co-expressed there
    12
    """
    if n_samples == 1 or n_samples < 0 or int(n_samples) != n_samples:
        msg = f"`n_samples` must be 0 (no samples) or an integer >= 2, got {n_samples!r}."
        raise ValueError(msg)
    for name, value, low in (("n_cells", n_cells, 2), ("module_size", module_size, 2), ("n_rna", n_rna, 0)):
        if int(value) != value or value < low:
            msg = f"`{name}` must be an integer >= {low}, got {value!r}."
            raise ValueError(msg)
    if int(n_hubs) != n_hubs or not 0 <= n_hubs < module_size:
        msg = f"`n_hubs` must be an integer in [0, module_size) = [0, {module_size}), got {n_hubs!r}."
        raise ValueError(msg)
    datasets = _datasets(n_rna, include_mouse, include_atac, include_spatial)
    if not datasets:
        msg = "No dataset selected: use `n_rna>=1` or include the mouse, ATAC or spatial dataset."
        raise ValueError(msg)
    modules = _modules(datasets, n_modules)
    rng = np.random.default_rng(seed)
    # Samples and condition draw from their own stream, so that the rest of the simulation does not change.
    rng_samples = np.random.default_rng([seed, 1])
    shared_names = [m.name for m in modules if m.kind == "shared"]
    condition_module = shared_names[1] if len(shared_names) > 1 else shared_names[0]

    # Universe of human genes, by role. Genes present in every dataset: shared and partial module genes and the
    # common background; genes of specific modules exist in their dataset only; the rest comes from a pool.
    everywhere = [m for m in modules if m.kind != "specific"]
    n_core_modules = module_size * len(everywhere)
    n_core = max(n_core_modules, round(0.6 * n_genes))
    n_specific = {
        d.name: module_size * sum(m.kind == "specific" and d.name in m.datasets for m in modules) for d in datasets
    }
    n_from_pool = {name: n_genes - n_core - k for name, k in n_specific.items()}
    if min(n_from_pool.values()) < 0:
        need = n_core + max(n_specific.values())
        msg = (
            f"`n_genes={n_genes}` is too small for {n_modules} modules of {module_size} genes: each dataset needs at "
            f"least {need} genes. Increase `n_genes` or decrease `n_modules`/`module_size`."
        )
        raise ValueError(msg)
    n_pool = max(2 * max(n_from_pool.values()), 1)
    n_universe = n_core + n_pool + sum(n_specific.values())
    width = max(4, len(str(n_universe)))
    # Random numbering, so that a gene's name says nothing about its role.
    numbers = rng.permutation(n_universe) + 1
    pos = 0

    def take(k: int) -> np.ndarray:
        nonlocal pos
        pos += k
        return np.arange(pos - k, pos)

    module_genes = {m.name: take(module_size) for m in everywhere}
    common_bg = take(n_core - n_core_modules)
    pool = take(n_pool)
    for m in modules:
        if m.kind == "specific":
            module_genes[m.name] = take(module_size)
    human_names = _gene_names("GENE", numbers, width)
    # A fifth of the pool has no mouse orthologue; every module and common gene has one.
    human_only = np.zeros(n_universe, dtype=bool)
    human_only[rng.choice(pool, size=n_pool // 5, replace=False)] = True
    mouse_names = _gene_names("Gene", numbers, width)

    module_of = np.full(n_universe, NO_MODULE, dtype=object)
    for name, idx in module_genes.items():
        module_of[idx] = name
    is_module_gene = module_of != NO_MODULE
    baseline = np.where(
        is_module_gene, rng.normal(np.log(1.5), 0.5, n_universe), rng.normal(np.log(0.5), 1.0, n_universe)
    )
    loading = rng.uniform(*MODULE_LOADING, n_universe)
    theta_gene = np.exp(rng.normal(0.0, 0.4, n_universe))
    # Hub genes draw from their own stream, so that without hubs nothing else changes. A hub loads more on its
    # factor than any other gene of its module and is well expressed (baseline in the top 5% of the module genes'):
    # at low counts the zeros blur a large loading, and the hubs of real modules are rarely lowly expressed genes.
    is_hub = np.zeros(n_universe, dtype=bool)
    if n_hubs:
        rng_hubs = np.random.default_rng([seed, 2])
        top = np.quantile(baseline[is_module_gene], [0.95, 1.0])
        for idx in module_genes.values():
            hubs = rng_hubs.choice(idx, size=int(n_hubs), replace=False)
            is_hub[hubs] = True
            loading[hubs] = rng_hubs.uniform(*HUB_LOADING, len(hubs))
            baseline[hubs] = rng_hubs.uniform(*top, len(hubs))

    adatas: dict[str, AnnData] = {}
    truth_rows = []
    activity: dict[str, pd.DataFrame] = {}
    categories = [m.name for m in modules] + [NO_MODULE]
    for d in datasets:
        prof = _PROFILES[d.omics]
        active = [m for m in modules if d.name in m.datasets]
        own_specific = [m for m in active if m.kind == "specific"]
        if d.species == "mouse":
            eligible = pool[~human_only[pool]]
            n_mouse_only = n_from_pool[d.name] // 4
            from_pool = np.sort(rng.choice(eligible, size=n_from_pool[d.name] - n_mouse_only, replace=False))
        else:
            n_mouse_only = 0
            from_pool = np.sort(rng.choice(pool, size=n_from_pool[d.name], replace=False))
        genes = np.concatenate(
            [*(module_genes[m.name] for m in everywhere), common_bg, from_pool]
            + [module_genes[m.name] for m in own_specific]
        )
        n_u = len(genes)
        active_names = {m.name for m in active}
        gene_module = np.array([g if g in active_names else NO_MODULE for g in module_of[genes]], dtype=object)

        # Cell factors: standard normal, or a smooth pattern of the coordinates (plus cell-level noise).
        coords = _grid_coordinates(rng, n_cells) if d.omics == "spatial" else None
        factors = {}
        for m in active:
            if coords is not None and m.pattern is not None:
                factors[m.name] = np.sqrt(0.85) * _spatial_pattern(m.pattern, coords) + np.sqrt(
                    0.15
                ) * rng.standard_normal(n_cells)
            else:
                factors[m.name] = rng.standard_normal(n_cells)
        if n_samples:
            sample = np.sort(rng_samples.integers(0, n_samples, n_cells))
            stim = sample >= n_samples // 2
            if condition_module in factors:
                offset = rng_samples.normal(0.0, 0.3, n_samples)
                factors[condition_module] = factors[condition_module] + condition_effect * stim + offset[sample]

        species_sd = 0.5 if d.species == "mouse" else 0.25
        b = baseline[genes] + prof["shift"] + rng.normal(0.0, species_sd, n_u)
        jitter = rng.uniform(0.8, 1.2, n_u)
        # hubs vary half as much between datasets, so that they stay above every other gene of their module
        jitter = np.where(is_hub[genes], 1.0 + (jitter - 1.0) / 2, jitter)
        lam = loading[genes] * jitter
        gene_loading = np.where(gene_module == NO_MODULE, 0.0, lam)
        gene_hub = is_hub[genes] & (gene_module != NO_MODULE)
        log_mu = np.broadcast_to(b, (n_cells, n_u)).copy()
        for name, f in factors.items():
            cols = np.flatnonzero(gene_module == name)
            # The -l**2/2 keeps a gene's mean at its baseline whatever its loading.
            log_mu[:, cols] += np.outer(f, lam[cols]) - lam[cols] ** 2 / 2
        depth_scale = prof["depth"] * rng.uniform(0.8, 1.25)
        size = depth_scale * np.exp(rng.normal(-(prof["depth_sd"] ** 2) / 2, prof["depth_sd"], n_cells))
        mu = size[:, None] * np.exp(log_mu)
        theta = prof["theta"] * theta_gene[genes]
        counts = _nb_counts(rng, mu, theta)

        if d.species == "mouse":
            mouse_only = _gene_names("Gm", np.arange(1, n_mouse_only + 1), width)
            extra_mu = size[:, None] * np.exp(rng.normal(np.log(0.5), 1.0, n_mouse_only))
            counts = np.hstack([counts, _nb_counts(rng, extra_mu, np.full(n_mouse_only, prof["theta"]))])
            names = np.concatenate([mouse_names[genes], mouse_only])
            human = np.concatenate([human_names[genes], np.full(n_mouse_only, None, dtype=object)])
            gene_module = np.concatenate([gene_module, np.full(n_mouse_only, NO_MODULE, dtype=object)])
            gene_loading = np.concatenate([gene_loading, np.zeros(n_mouse_only)])
            gene_hub = np.concatenate([gene_hub, np.zeros(n_mouse_only, dtype=bool)])
        else:
            names = human_names[genes]
            human = names
        # Real matrices come filtered to detected genes (`sc.pp.filter_genes(min_cells=1)`); keep the gene count
        # fixed by giving a never-detected gene one count in a random cell instead of dropping it.
        undetected = np.flatnonzero(counts.sum(axis=0) == 0)
        counts[rng.integers(0, n_cells, len(undetected)), undetected] = 1
        order = np.argsort(names, kind="stable")
        names, human, gene_module = names[order], human[order], gene_module[order]
        gene_loading, gene_hub = gene_loading[order], gene_hub[order]
        X = sparse.csr_matrix(counts[:, order].astype(np.float32))

        prefix = "spot" if d.omics == "spatial" else "cell"
        obs = pd.DataFrame(index=pd.Index([f"{d.name}_{prefix}{i:04d}" for i in range(n_cells)]))
        var = pd.DataFrame({"module": pd.Categorical(gene_module, categories=categories)}, index=pd.Index(names))
        spatial_pattern = np.zeros(len(names), dtype=bool)
        if coords is not None:
            patterned = [m.name for m in active if m.pattern is not None]
            spatial_pattern = np.isin(gene_module, patterned)
            var["spatial_pattern"] = spatial_pattern
        if n_samples:
            obs["sample"] = pd.Categorical([f"{d.name}_s{k}" for k in sample])
            obs["condition"] = pd.Categorical(np.where(stim, "stim", "ctrl"), categories=["ctrl", "stim"])
        activity[d.name] = pd.DataFrame(factors, index=obs.index.copy())[[m.name for m in active]]
        adata = AnnData(X=X, obs=obs, var=var)
        adata.uns[OMICS] = d.omics
        adata.uns[TISSUE] = d.tissue
        adata.uns[SPECIES] = d.species
        if coords is not None:
            adata.obsm[SPATIAL] = coords
        adatas[d.name] = adata

        kinds = {m.name: m.kind for m in modules}
        truth_rows.append(
            pd.DataFrame(
                {
                    "dataset": d.name,
                    "gene": names.astype(str),
                    "human_gene": human,
                    "module": gene_module,
                    "module_kind": [kinds.get(g, NO_MODULE) for g in gene_module],
                    "spatial_pattern": spatial_pattern,
                    "loading": gene_loading,
                    "is_hub": gene_hub,
                }
            )
        )

    genes_truth = pd.concat(truth_rows, ignore_index=True)
    genes_truth["dataset"] = pd.Categorical(genes_truth["dataset"], categories=[d.name for d in datasets])
    genes_truth["human_gene"] = pd.Categorical(genes_truth["human_gene"])
    genes_truth["module"] = pd.Categorical(genes_truth["module"], categories=categories)
    genes_truth["module_kind"] = pd.Categorical(
        genes_truth["module_kind"], categories=["shared", "partial", "specific", NO_MODULE]
    )
    has_spatial = any(d.omics == "spatial" for d in datasets)
    modules_truth = pd.DataFrame(
        {
            "module": [m.name for m in modules],
            "kind": [m.kind for m in modules],
            "datasets": [",".join(m.datasets) for m in modules],
            "n_genes": [module_size] * len(modules),
            "spatial_pattern": [has_spatial and m.pattern is not None for m in modules],
        }
    )
    with_ortho = np.flatnonzero(~human_only)
    orthologs = pd.DataFrame(
        {"human": human_names[with_ortho].astype(str), "mouse": mouse_names[with_ortho].astype(str)}
    )
    orthologs = orthologs.sort_values("human", ignore_index=True)
    # String indices, so that the tables come back identical from an .h5mu file.
    for df in (genes_truth, modules_truth, orthologs):
        df.index = df.index.astype(str)

    with md.set_options(pull_on_update=False):
        # axis=1: the datasets share genes and have disjoint cells. With axis=0 (shared cells), genes present in
        # several datasets would be duplicated in the global var table.
        mdata = md.MuData(adatas, axis=1)
    mdata.uns[TRUTH_KEY] = {
        "genes": genes_truth,
        "modules": modules_truth,
        "orthologs": orthologs,
        "params": {
            "n_cells": n_cells,
            "n_genes": n_genes,
            "n_modules": n_modules,
            "module_size": module_size,
            "n_rna": n_rna,
            "include_mouse": include_mouse,
            "include_atac": include_atac,
            "include_spatial": include_spatial,
            "n_samples": n_samples,
            "condition_effect": condition_effect,
            "n_hubs": n_hubs,
            "seed": seed,
        },
        "activity": activity,
    }
    if n_samples:
        mdata.uns[TRUTH_KEY]["condition"] = {"module": condition_module, "effect": condition_effect}
    return mdata


def toy_atac_peaks(
    *, n_cells: int = 300, n_genes: int = 150, n_modules: int = 3, seed: int = 0
) -> tuple[AnnData, pd.DataFrame]:
    """Simulate scATAC-seq peak counts and the matching gene annotation (the input of :func:`~musegnn_sc.pp.gene_activity`).

    Genes lie on ``chr1``-``chr3`` with random strands, 3-30 kb bodies and 10-40 kb intergenic gaps; a tenth of
    them have a second annotation row (an alternative TSS inside the gene). Each gene has a promoter peak 1-1.5 kb
    upstream of its TSS and 0-3 peaks in its body; further peaks lie between genes, more than 2 kb from any gene.
    Peaks are 500 bp. Counts are negative binomial around ``size factor x peak weight x gene activity``, where the
    activity of genes in one of ``n_modules`` modules follows a shared cell factor (as in :func:`toy_mudata`), so the
    gene-activity counts carry planted modules.

    Parameters
    ----------
    n_cells
        Number of cells.
    n_genes
        Number of genes.
    n_modules
        Number of planted modules of ``n_genes // 10`` genes each.
    seed
        Random seed; equal seeds give identical objects.

    Returns
    -------
    ``(peaks, annotation)``: ``peaks`` is cells x peaks with raw counts in ``X`` (CSR, float32), names such as
    ``chr1:10000-10500`` and ``var`` columns ``chrom``, ``start``, ``end`` (BED convention: 0-based start, end
    excluded) and ``gene`` (the gene whose body or promoter holds the peak, ``'none'`` between genes);
    ``annotation`` has columns ``chrom``, ``start``, ``end``, ``gene``, ``strand`` and ``module`` (ground truth).

    Examples
    --------
    >>> import musegnn_sc as msg
    >>> peaks, annotation = msg.datasets.toy_atac_peaks()
    >>> gene_counts = msg.pp.gene_activity(peaks, annotation)
    """
    module_size = n_genes // 10
    if n_cells < 2 or n_genes < 3 or n_modules * module_size > n_genes or module_size < 2:
        msg = (
            f"Cannot simulate {n_modules} modules of {module_size} genes among {n_genes} genes in {n_cells} cells: "
            "use `n_cells>=2`, `n_genes>=20` and `n_modules<=10`."
        )
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    width = max(4, len(str(n_genes)))
    names = _gene_names("GENE", np.arange(1, n_genes + 1), width).astype(str)
    chrom = np.array([f"chr{1 + (3 * i) // n_genes}" for i in range(n_genes)])
    strand = rng.choice(np.array(["+", "-"]), n_genes)
    length = rng.integers(3_000, 30_000, n_genes)
    gap = rng.integers(10_000, 40_000, n_genes)
    start = np.empty(n_genes, dtype=np.int64)
    cursor = 0
    for i in range(n_genes):
        if i and chrom[i] != chrom[i - 1]:
            cursor = 0
        start[i] = cursor + gap[i]
        cursor = start[i] + length[i]
    end = start + length

    module = np.full(n_genes, NO_MODULE, dtype=object)
    members = rng.permutation(n_genes)[: n_modules * module_size].reshape(n_modules, module_size)
    for k, idx in enumerate(members):
        module[idx] = f"M{k + 1}"

    # Peaks: (chrom, start, gene index or -1).
    p_chrom, p_start, p_gene = [], [], []
    for i in range(n_genes):
        tss = start[i] if strand[i] == "+" else end[i]
        promoter = tss - 1_500 if strand[i] == "+" else tss + 1_000
        n_slots = length[i] // 1_000 - 1
        slots = rng.choice(n_slots, size=min(int(rng.integers(0, 4)), n_slots), replace=False)
        for s in [promoter, *(start[i] + 1_000 * slots + 250)]:
            p_chrom.append(chrom[i])
            p_start.append(int(s))
            p_gene.append(i)
    for i in np.flatnonzero(rng.random(n_genes) < 0.5):
        # Between the previous gene's end (or the chromosome start) and this gene's start, > 2 kb from both.
        left = start[i] - gap[i]
        p_chrom.append(chrom[i])
        p_start.append(int(left + rng.integers(3_000, gap[i] - 3_500)))
        p_gene.append(-1)
    p_chrom, p_start, p_gene = np.array(p_chrom), np.array(p_start, dtype=np.int64), np.array(p_gene)
    order = np.lexsort((p_start, p_chrom))
    p_chrom, p_start, p_gene = p_chrom[order], p_start[order], p_gene[order]
    p_end = p_start + 500
    n_peaks = len(p_start)

    factors = rng.standard_normal((n_cells, n_modules))
    lam = rng.uniform(0.6, 1.0, n_genes)
    log_act = np.broadcast_to(rng.normal(0.0, 0.5, n_genes), (n_cells, n_genes)).copy()
    for k in range(n_modules):
        idx = members[k]
        log_act[:, idx] += np.outer(factors[:, k], lam[idx]) - lam[idx] ** 2 / 2
    size = 0.15 * np.exp(rng.normal(-0.125, 0.5, n_cells))
    activity = np.where(p_gene >= 0, np.exp(log_act[:, np.maximum(p_gene, 0)]), np.exp(rng.normal(0.0, 0.5, n_peaks)))
    mu = size[:, None] * rng.uniform(0.3, 1.0, n_peaks) * activity
    counts = _nb_counts(rng, mu, np.full(n_peaks, 2.0))

    var = pd.DataFrame(
        {
            "chrom": p_chrom,
            "start": p_start,
            "end": p_end,
            "gene": np.where(p_gene >= 0, names[np.maximum(p_gene, 0)], NO_MODULE),
        },
        index=pd.Index([f"{c}:{s}-{e}" for c, s, e in zip(p_chrom, p_start, p_end, strict=True)]),
    )
    obs = pd.DataFrame(index=pd.Index([f"atac_cell{i:04d}" for i in range(n_cells)]))
    peaks = AnnData(X=sparse.csr_matrix(counts.astype(np.float32)), obs=obs, var=var)

    annotation = pd.DataFrame(
        {"chrom": chrom, "start": start, "end": end, "gene": names, "strand": strand, "module": module.astype(str)}
    )
    # Alternative TSSs inside the gene for a tenth of the genes (the union of a gene's windows counts each peak once).
    alt = np.flatnonzero(rng.random(n_genes) < 0.1)
    shift = (length[alt] * rng.uniform(0.2, 0.5, len(alt))).astype(np.int64)
    extra = annotation.iloc[alt].copy()
    plus = strand[alt] == "+"
    extra["start"] = np.where(plus, start[alt] + shift, start[alt])
    extra["end"] = np.where(plus, end[alt], end[alt] - shift)
    annotation = pd.concat([annotation, extra], ignore_index=True)
    annotation.index = annotation.index.astype(str)
    return peaks, annotation
