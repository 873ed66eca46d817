import numpy as np
import pytest
import torch
from scipy import sparse
from torch_geometric.nn import GraphNorm, TransformerConv

from musegnn_sc.model._module import (
    DatasetEncoder,
    GraphTransformerConv,
    MuSeGNNModule,
    SharedBlock,
    SingleGraphNorm,
    graph_tensors,
    use_dense,
)


def _graph(n=60, p=0.4, seed=0, isolated=(7,)):
    rng = np.random.default_rng(seed)
    a = rng.random((n, n)) < p  # directed on purpose: checks the edge orientation
    np.fill_diagonal(a, True)
    for k in isolated:
        a[:, k] = False  # no in-edges: PyG gives it the skip term only
    feats = rng.normal(size=(n, 12)).astype(np.float32)
    return feats, sparse.csr_matrix(a.astype(np.float32))


@pytest.mark.parametrize("heads", [1, 4])
def test_dense_attention_equals_pyg_transformerconv(heads):
    feats, adj = _graph()
    torch.manual_seed(0)
    layer = GraphTransformerConv(12, 8, heads)
    reference = TransformerConv(12, 8, heads=heads)
    reference.load_state_dict(layer.state_dict())
    g = graph_tensors(feats, adj, dense=True)
    x1 = g.x.clone().requires_grad_(True)
    x2 = g.x.clone().requires_grad_(True)
    out = layer(x1, g)
    expected = reference(x2, g.edges())
    assert out.shape == (60, heads * 8)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    w = torch.randn_like(out)
    (out * w).sum().backward()
    (expected * w).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-5, rtol=1e-5)
    for name, p1 in layer.named_parameters():
        p2 = reference.get_parameter(name)
        torch.testing.assert_close(p1.grad, p2.grad, atol=1e-4, rtol=1e-4, msg=name)
    # node 7 has no in-neighbour: its output is the root-weight term alone
    torch.testing.assert_close(out[7], layer.lin_skip(g.x[7]), atol=1e-6, rtol=1e-6)


def test_dense_and_sparse_paths_give_the_same_embedding():
    feats, adj = _graph(isolated=())
    adj = adj.maximum(adj.T)
    torch.manual_seed(1)
    module = MuSeGNNModule([12], [60], ["rna"], n_latent=8)
    z_dense = module.encode(0, graph_tensors(feats, adj, dense=True))
    z_sparse = module.encode(0, graph_tensors(feats, adj, dense=False))
    assert z_dense.shape == (60, 8)
    torch.testing.assert_close(z_dense, z_sparse, atol=1e-5, rtol=1e-5)


def test_single_graph_norm_equals_pyg_graphnorm():
    torch.manual_seed(2)
    ours, ref = SingleGraphNorm(16), GraphNorm(16)
    with torch.no_grad():
        for p in ours.parameters():
            p.normal_()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(30, 16)
    torch.testing.assert_close(ours(x), ref(x))


def test_parameter_counts_match_the_reference_architecture():
    # anchor_measurements.md: first layer 512 * n_inputs + 896 parameters, shared block 58,048, decoder 3 (n^2 + n).
    assert sum(p.numel() for p in DatasetEncoder(100, 32, 4).parameters()) == 512 * 100 + 896
    assert sum(p.numel() for p in SharedBlock(128, 32, 2).parameters()) == 58_048
    module = MuSeGNNModule([10, 20, 30], [50, 40, 50], ["rna", "atac", "rna"])
    assert len(module.shared) == 2  # one shared block per group
    n_dec = sum(p.numel() for p in module.decoders[1].parameters())
    assert n_dec == 3 * (40 * 40 + 40)
    enc = {id(p) for p in module.encoder_parameters()}
    dec = {id(p) for p in module.decoder_parameters()}
    assert not enc & dec
    assert len(enc) + len(dec) == len(list(module.parameters()))


def test_decoders_accept_graphs_of_any_size_and_inner_product_option():
    module = MuSeGNNModule([5, 5], [9, 23], ["rna", "rna"], n_latent=4, decoder="inner_product")
    for i, n in enumerate((9, 23)):
        feats, adj = _graph(n=n, seed=i, isolated=())
        z = module.encode(i, graph_tensors(feats[:, :5], adj, dense=True))
        assert module.decode(i, z).shape == (n, n)
    with pytest.raises(ValueError, match="decoder"):
        MuSeGNNModule([5], [9], ["rna"], decoder="bilinear")


def test_attention_choice():
    assert use_dense(1000, 0.3, "auto")
    assert not use_dense(1000, 0.001, "auto")
    assert not use_dense(20_000, 0.3, "auto")
    assert use_dense(20_000, 0.001, "dense")
    assert not use_dense(10, 1.0, "sparse")
    with pytest.raises(ValueError, match="attention"):
        use_dense(10, 1.0, "flash")


def test_mlp_decoder_low_rank_first_layer_equals_the_plain_mlp():
    from musegnn_sc.model._module import MLPEdgeDecoder

    torch.manual_seed(3)
    dec = MLPEdgeDecoder(50)
    z = torch.randn(50, 8, dtype=torch.float64)
    dec = dec.double()
    torch.testing.assert_close(dec(z), dec.mlp(z @ z.T), rtol=1e-10, atol=1e-10)


def test_dense_graphs_keep_no_edge_index_but_give_the_same_edges():
    feats, adj = _graph()
    dense, edges = graph_tensors(feats, adj, dense=True), graph_tensors(feats, adj, dense=False)
    assert dense.edge_index is None
    assert set(map(tuple, dense.edges().T.tolist())) == set(map(tuple, edges.edge_index.T.tolist()))
    torch.testing.assert_close(dense.target(), edges.target())
    assert dense.to("cpu").edge_index is None


def test_decoding_chosen_rows_gives_exactly_those_rows_of_the_full_output():
    from musegnn_sc.model._module import InnerProductDecoder, MLPEdgeDecoder

    torch.manual_seed(4)
    z = torch.randn(40, 6)
    rows = torch.tensor([0, 3, 17, 39])
    for dec in (MLPEdgeDecoder(40), InnerProductDecoder(40)):
        torch.testing.assert_close(dec(z, rows), dec(z)[rows], rtol=0, atol=1e-6)
    feats, adj = _graph(n=40, isolated=())
    g = graph_tensors(feats, adj, dense=True)
    torch.testing.assert_close(g.target(rows), g.target()[rows], rtol=0, atol=0)
    sparse_g = graph_tensors(feats, adj, dense=False)
    torch.testing.assert_close(sparse_g.target(rows), g.target(rows), rtol=0, atol=0)


def test_bfloat16_decoder_keeps_float32_logits_close_to_the_float32_ones():
    from musegnn_sc.model._module import MLPEdgeDecoder

    torch.manual_seed(5)
    dec = MLPEdgeDecoder(200)
    z = torch.randn(200, 32, requires_grad=True)
    full = dec(z)
    half = dec(z, dtype=torch.bfloat16)
    assert half.dtype == torch.float32
    # bfloat16 keeps 8 bits of mantissa: relative error of a product of 200-long sums about 1e-2
    assert (half - full).abs().max() < 0.03 * full.abs().max()
    assert not torch.equal(half, full)  # the products did run in bfloat16
    half.sum().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    assert dec.mlp[2].weight.grad.dtype == torch.float32  # master weights and their gradients stay float32


def test_auto_decoder_precision_follows_the_hardware(monkeypatch):
    from musegnn_sc.model import _precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(_precision, "_cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))
    assert _precision.resolve_decoder_precision("auto", cpu) == "bfloat16"
    monkeypatch.setattr(_precision, "_cpu_flags", lambda: frozenset({"avx2"}))
    assert _precision.resolve_decoder_precision("auto", cpu) == "float32"
    assert _precision.resolve_decoder_precision("bfloat16", cpu) == "bfloat16"
    assert _precision.resolve_decoder_precision("float32", cpu) == "float32"
