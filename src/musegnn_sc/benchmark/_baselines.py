"""The paper's baselines, trained on the same graphs and node features as MuSe-GNN, returning the same gdata layout.

Bugs of the authors' baseline scripts are not reproduced (reference notes section 1.9): the GAE/VGAE loss applies
one sigmoid (``BCEWithLogits`` on ``z z^T``), the MAE masks a copy of its input afresh each epoch and steps every
parameter, and the WSMAE runs. Torch is imported inside the functions that need it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from musegnn_sc import _logging as logg
from musegnn_sc._keys import EMBEDDING

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

    from musegnn_sc.model._data import GraphData

Method = Literal["pca", "gae", "vgae", "mae", "wsmae", "gene2vec"]
#: Baselines run by :func:`run_baseline`.
BASELINES: tuple[str, ...] = ("pca", "gae", "vgae", "mae", "wsmae", "gene2vec")

#: Default epochs and learning rates (small enough for a CPU: the authors ran 1000-3000 epochs on a GPU).
_DEFAULTS = {
    "gae": {"epochs": 200, "lr": 5e-3},
    "vgae": {"epochs": 200, "lr": 5e-3},
    "mae": {"epochs": 200, "lr": 2e-3},
    "wsmae": {"epochs": 150, "lr": 1e-3},
    "gene2vec": {"epochs": 10, "lr": 0.025},
}


def gene_adata(graphs: Sequence[GraphData], embeddings: Sequence[np.ndarray], *, key_added: str, uns: dict) -> AnnData:
    """Gene-level AnnData in the layout of ``MuSeGNN.get_gene_embeddings`` (rows ``'<dataset>:<gene>'``)."""
    from anndata import AnnData

    common = set.intersection(*(set(map(str, g.genes)) for g in graphs))
    obs = pd.concat(
        [
            pd.DataFrame(
                {
                    "gene": np.asarray(g.genes).astype(str),
                    "dataset": g.name,
                    "omics": g.omics,
                    "tissue": g.tissue,
                    "species": g.species,
                    "is_common": [str(x) in common for x in g.genes],
                }
            )
            for g in graphs
        ],
        ignore_index=True,
    )
    obs.index = (obs["dataset"] + ":" + obs["gene"]).to_numpy()
    for col in ("dataset", "omics", "tissue", "species"):
        obs[col] = pd.Categorical(obs[col], categories=list(dict.fromkeys(obs[col])))
    X = np.concatenate([np.asarray(e, dtype=np.float32) for e in embeddings], axis=0)
    prefix = str(uns.get("method", "dim"))
    gdata = AnnData(X=X.copy(), obs=obs, var=pd.DataFrame(index=[f"{prefix}_{k}" for k in range(X.shape[1])]))
    gdata.obsm[key_added] = X
    gdata.uns["baseline"] = uns
    return gdata


def _scaled_features(g: GraphData) -> np.ndarray:
    """Node features divided by their root mean square, so every dataset enters the networks on the same scale."""
    X = np.asarray(g.features, dtype=np.float32)
    rms = float(np.sqrt(np.mean(X.astype(np.float64) ** 2)))
    return X / rms if rms > 0 else X


def _pad(Z: np.ndarray, width: int) -> np.ndarray:
    """Zero columns up to ``width`` (a graph with fewer genes or features than the embedding width)."""
    if Z.shape[1] >= width:
        return Z[:, :width]
    return np.hstack([Z, np.zeros((Z.shape[0], width - Z.shape[1]), dtype=Z.dtype)])


# --------------------------------------------------------------------------------------------------------------------
# PCA and Gene2vec
# --------------------------------------------------------------------------------------------------------------------
def _pca(graphs: Sequence[GraphData], n_latent: int, seed: int) -> tuple[list[np.ndarray], dict]:
    """Per dataset: principal-component scores of the genes (rows) over the node-feature columns."""
    from sklearn.decomposition import PCA

    out = []
    for g in graphs:
        X = np.asarray(g.features, dtype=np.float64)
        n_comp = max(1, min(n_latent, X.shape[0] - 1, X.shape[1]))
        Z = PCA(n_components=n_comp, svd_solver="full", random_state=seed).fit_transform(X)
        out.append(_pad(Z.astype(np.float32), n_latent))
    return out, {}


def _require_gensim():
    try:
        import gensim  # noqa: F401
        from gensim.models import Word2Vec
    except ImportError as err:
        msg = (
            "The 'gene2vec' baseline needs gensim, which is not installed. Install it with "
            "`pip install 'musegnn_sc[benchmark]'` (or `pip install gensim`), or leave 'gene2vec' out of `methods`."
        )
        raise ImportError(msg) from err
    return Word2Vec


def _gene2vec(
    graphs: Sequence[GraphData], n_latent: int, seed: int, epochs: int, lr: float
) -> tuple[list[np.ndarray], dict]:
    """Per dataset: skip-gram word2vec on the graph's edges, each edge a two-word sentence (Gene2vec's recipe)."""
    Word2Vec = _require_gensim()
    rng = np.random.default_rng(seed)
    out = []
    for g in graphs:
        A = g.adjacency.tocoo()
        genes = np.asarray(g.genes).astype(str)
        order = rng.permutation(A.nnz)
        sentences = [[genes[i], genes[j]] for i, j in zip(A.row[order], A.col[order], strict=True)]
        # workers=1: word2vec is only reproducible under a seed single-threaded.
        model = Word2Vec(
            sentences=sentences,
            vector_size=n_latent,
            window=1,
            min_count=1,
            sg=1,
            workers=1,
            seed=seed,
            epochs=epochs,
            alpha=lr,
        )
        out.append(np.stack([model.wv[x] for x in genes]).astype(np.float32))
    return out, {}


# --------------------------------------------------------------------------------------------------------------------
# torch baselines
# --------------------------------------------------------------------------------------------------------------------
def _norm_adjacency(adj, torch):
    """GCN propagation matrix ``D^-1/2 (A + I) D^-1/2`` (self-loops set to 1), dense for graphs up to 4000 genes."""
    from scipy import sparse

    A = sparse.csr_matrix(adj, dtype=np.float32)
    A = ((A != 0).astype(np.float32) + sparse.eye(A.shape[0], dtype=np.float32)).tocsr()
    A.data[:] = 1.0
    d = np.asarray(A.sum(axis=1)).ravel()
    inv = 1.0 / np.sqrt(d)
    A = sparse.diags(inv) @ A @ sparse.diags(inv)
    if A.shape[0] <= 4000:
        return torch.from_numpy(A.toarray().astype(np.float32))
    A = A.tocoo()
    idx = torch.from_numpy(np.vstack([A.row, A.col]).astype(np.int64))
    return torch.sparse_coo_tensor(idx, torch.from_numpy(A.data.astype(np.float32)), A.shape).coalesce()


def _train_torch(
    method: str,
    graphs: Sequence[GraphData],
    *,
    n_latent: int,
    hidden: int,
    seed: int,
    epochs: int,
    lr: float,
    mask_ratio: float,
    device: str,
) -> tuple[list[np.ndarray], dict]:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    dev = torch.device(device)
    groups = [g.omics for g in graphs]
    feats = [torch.from_numpy(_scaled_features(g)).to(dev) for g in graphs]
    targets = [torch.from_numpy(g.adjacency.toarray() != 0).float().to(dev) for g in graphs]
    graph_based = method in ("gae", "vgae")
    props = [_norm_adjacency(g.adjacency, torch).to(dev) for g in graphs] if graph_based else None
    mid = max(n_latent, hidden // 2)

    class Layer(nn.Module):
        """A GCN layer (``P X W``) for GAE/VGAE, a linear layer for the MLP auto-encoders."""

        def __init__(self, n_in: int, n_out: int):
            super().__init__()
            self.lin = nn.Linear(n_in, n_out)

        def forward(self, x, prop):
            return self.lin(x) if prop is None else prop @ self.lin(x)

    class Encoder(nn.Module):
        """Dataset-specific first layer; layers shared by the datasets of one omics type (as MuSe-GNN's encoder)."""

        def __init__(self):
            super().__init__()
            self.first = nn.ModuleList([Layer(f.shape[1], hidden) for f in feats])
            kinds = sorted(set(groups))
            self.shared = nn.ModuleDict({k: Layer(hidden, mid) for k in kinds})
            self.mu = nn.ModuleDict({k: Layer(mid, n_latent) for k in kinds})
            if method == "vgae":
                self.logstd = nn.ModuleDict({k: Layer(mid, n_latent) for k in kinds})
            self.act = nn.Mish()

        def forward(self, i: int, x, prop):
            k = groups[i]
            h = self.act(self.first[i](x, prop))
            h = self.act(self.shared[k](h, prop))
            mu = self.mu[k](h, prop)
            logstd = self.logstd[k](h, prop).clamp(max=10) if method == "vgae" else None
            return mu, logstd

    encoder = Encoder().to(dev)
    modules = [encoder]
    if method == "mae":
        decoders = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Linear(n_latent, mid),
                    nn.Mish(),
                    nn.Linear(mid, hidden),
                    nn.Mish(),
                    nn.Linear(hidden, f.shape[1]),
                )
                for f in feats
            ]
        ).to(dev)
        modules.append(decoders)
    elif method == "wsmae":
        # The paper's MLP edge decoder on z z^T, one per dataset (its width is the number of genes).
        decoders = nn.ModuleList(
            [
                nn.Sequential(nn.Linear(f.shape[0], f.shape[0]), nn.Mish(), nn.Linear(f.shape[0], f.shape[0]))
                for f in feats
            ]
        ).to(dev)
        modules.append(decoders)
    params = [p for m in modules for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=lr)
    bce = nn.BCEWithLogitsLoss()
    history = []
    for _ in range(epochs):
        total = 0.0
        for i in torch.randperm(len(graphs), generator=gen).tolist():
            prop = props[i] if graph_based else None
            x = feats[i]
            if method == "mae":
                keep = (torch.rand(x.shape, generator=gen) >= mask_ratio).to(dev)
                x = x * keep
            mu, logstd = encoder(i, x, prop)
            if method == "vgae":
                eps = torch.randn(mu.shape, generator=gen).to(dev)
                z = mu + eps * logstd.exp()
                kl = -0.5 * torch.mean(torch.sum(1 + 2 * logstd - mu**2 - logstd.exp() ** 2, dim=1))
                loss = bce(z @ z.T, targets[i]) + kl / x.shape[0]
            elif method == "gae":
                loss = bce(mu @ mu.T, targets[i])
            elif method == "mae":
                loss = nn.functional.mse_loss(decoders[i](mu), feats[i])
            else:  # wsmae
                loss = bce(decoders[i](mu @ mu.T), targets[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        history.append(total / len(graphs))
    encoder.eval()
    with torch.no_grad():
        out = [encoder(i, feats[i], props[i] if graph_based else None)[0].cpu().numpy() for i in range(len(graphs))]
    n_params = sum(p.numel() for p in params)
    return out, {"loss": np.asarray(history, dtype=np.float64), "n_parameters": int(n_params)}


def run_baseline(
    mdata: MuData,
    method: Method,
    *,
    seed: int = 0,
    n_latent: int = 32,
    graph_key: str = "coexpression",
    mods: Sequence[str] | None = None,
    features: Literal["graph", "expression"] = "graph",
    epochs: int | None = None,
    lr: float | None = None,
    hidden: int = 128,
    mask_ratio: float = 0.25,
    device: str = "cpu",
    n_threads: int | None = None,
    key_added: str = EMBEDDING,
) -> AnnData:
    """Gene embeddings of a baseline method of the MuSe-GNN benchmark, on the graphs and features MuSe-GNN uses.

    Every method reads the co-expression graphs and node features stored by
    :func:`~musegnn_sc.pp.build_coexpression_graphs` and returns a gene-level AnnData in the layout of
    :func:`~musegnn_sc.tl.train_musegnn`, so :func:`~musegnn_sc.tl.evaluate` scores all methods alike.

    - ``'pca'``: per dataset, the genes' principal-component scores over the node features (the residual profile
      reduced by SVD; the authors ran PCA on the full residual profile). Deterministic: ``seed`` has no effect.
    - ``'gae'``: graph auto-encoder: a dataset-specific GCN layer, then GCN layers shared by datasets of the same omics
      (``hidden -> hidden/2 -> n_latent``, Mish); loss ``BCEWithLogits(z z^T, A)``.
    - ``'vgae'``: the variational GAE (mean and log-std heads, reparameterisation, KL term scaled by ``1/n``); the
      embedding is the mean.
    - ``'mae'``: masked auto-encoder with the same MLP encoder layout: ``mask_ratio`` of the input entries are zeroed
      afresh each epoch and an MLP decoder per dataset reconstructs the unmasked features (MSE).
    - ``'wsmae'``: weight-sharing MLP auto-encoder: the MLP encoder and, per dataset, an MLP edge decoder on
      ``z z^T`` trained with ``BCEWithLogits`` against the adjacency: MuSe-GNN's reconstruction objective without
      graph layers and without the cross-graph losses.
    - ``'gene2vec'``: per dataset, skip-gram word2vec (``window=1``) on the graph's edges as two-word sentences
      (needs ``pip install gensim``).

    Parameters
    ----------
    mdata
        MuData of unpaired datasets with co-expression graphs.
    method
        One of ``'pca'``, ``'gae'``, ``'vgae'``, ``'mae'``, ``'wsmae'``, ``'gene2vec'``.
    seed
        Random seed (weights, masks, sampling order).
    n_latent
        Embedding width (32, as every method of the paper).
    graph_key
        Prefix the graphs were stored under.
    mods
        Modalities to use (default: every modality with a graph).
    features
        Node features: ``'graph'`` (stored by the graph builder) or ``'expression'`` (log-normalised profiles).
    epochs
        Training epochs (torch methods and gene2vec); default per method, small enough for a CPU.
    lr
        Learning rate (Adam; gene2vec's initial ``alpha``); default per method.
    hidden
        Width of the first hidden layer of the neural baselines.
    mask_ratio
        Fraction of input entries masked by ``'mae'``.
    device
        Torch device of the neural baselines.
    n_threads
        Torch CPU threads while training (restored afterwards); ``None`` keeps torch's setting. On a busy machine
        ``1`` avoids thread contention, which slows the small matrix products of these models many times over.
    key_added
        ``obsm`` key of the embedding (default ``'X_musegnn'``, so downstream functions work unchanged).

    Returns
    -------
    AnnData with one row per (dataset, gene), ``obs`` ``gene``, ``dataset``, ``omics``, ``tissue``, ``species``,
    ``is_common``, the embedding in ``obsm[key_added]`` and ``X``, and ``uns['baseline']`` with the method, seed,
    parameters and (neural methods) the loss per epoch.

    Examples
    --------
    >>> import musegnn_sc as msg
    >>> from musegnn_sc.benchmark import run_baseline
    >>> mdata = msg.datasets.toy_mudata(seed=0)
    >>> msg.pp.build_coexpression_graphs(mdata, n_top_genes=200)
    >>> pca = run_baseline(mdata, "pca")
    >>> msg.tl.evaluate(pca, mdata)
    """
    from musegnn_sc.model._data import read_graphs

    if method not in BASELINES:
        msg = f"Unknown baseline {method!r}; choose one of {list(BASELINES)}."
        raise ValueError(msg)
    if int(n_latent) != n_latent or n_latent < 1:
        msg = f"`n_latent` must be a positive integer, got {n_latent!r}."
        raise ValueError(msg)
    if not 0.0 <= mask_ratio < 1.0:
        msg = f"`mask_ratio` must lie in [0, 1), got {mask_ratio!r}."
        raise ValueError(msg)
    if method == "gene2vec":
        _require_gensim()
    if mods is None:
        mods = [m for m, a in mdata.mod.items() if graph_key in a.uns]
        if not mods:
            msg = (
                f"No modality of the MuData has a co-expression graph under {graph_key!r}. Build them first with "
                "`msg.pp.build_coexpression_graphs(mdata)`."
            )
            raise KeyError(msg)
    graphs = read_graphs(mdata, graph_key=graph_key, mods=mods, features=features)
    defaults = _DEFAULTS.get(method, {})
    epochs = int(defaults.get("epochs", 0) if epochs is None else epochs)
    lr = float(defaults.get("lr", 0.0) if lr is None else lr)
    t0 = logg.start(f"training baseline {method!r} (seed {seed}) on {len(graphs)} datasets")
    if method == "pca":
        emb, extra = _pca(graphs, n_latent, seed)
    elif method == "gene2vec":
        emb, extra = _gene2vec(graphs, n_latent, seed, epochs, lr)
    else:
        import torch

        before = torch.get_num_threads()
        if n_threads is not None:
            torch.set_num_threads(int(n_threads))
        try:
            emb, extra = _train_torch(
                method,
                graphs,
                n_latent=n_latent,
                hidden=hidden,
                seed=seed,
                epochs=epochs,
                lr=lr,
                mask_ratio=mask_ratio,
                device=device,
            )
        finally:
            torch.set_num_threads(before)
    params = {"n_latent": int(n_latent), "graph_key": graph_key, "features": features, "hidden": int(hidden)}
    if method not in ("pca",):
        params.update({"epochs": epochs, "lr": lr})
    if method == "mae":
        params["mask_ratio"] = float(mask_ratio)
    uns = {"method": method, "seed": int(seed), "params": params, **extra}
    gdata = gene_adata(graphs, emb, key_added=key_added, uns=uns)
    logg.finish(f"baseline {method!r}: {gdata.n_obs} gene rows", t0)
    return gdata
