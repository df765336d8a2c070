"""Encoders: Eq. 1 against its dense formula, the §4.1 hierarchy against a plain loop, sharing, invariance."""

import doctest
import functools

import jax
import jax.numpy as jnp
import jraph
import numpy as np
import pytest

import gns_jax.gcn
from gns_jax.gcn import (
    GCN,
    GATLayer,
    GCNLayer,
    HierarchicalGCN,
    encoder_output_dim,
    make_encoder,
)
from gns_jax.graph import NUM_FEATURES, Block, GraphObservation, build_graph_structure, node_features
from gns_jax.targets import ResNet

KEY = jax.random.PRNGKey(0)
RNG = np.random.default_rng(0)


def chain_graph(n=5, f=4, edges=((0, 1), (1, 2), (2, 3), (1, 3), (3, 4))):
    s, r = np.array(edges).T
    return jraph.GraphsTuple(nodes=jnp.asarray(RNG.standard_normal((n, f)), jnp.float32), edges=None,
                             globals=None, senders=jnp.asarray(s), receivers=jnp.asarray(r),
                             n_node=jnp.array([n]), n_edge=jnp.array([len(edges)]))


def resnet_structure(depth):
    shapes = jax.eval_shape(ResNet(depth=depth).init, KEY, jnp.zeros((1, 32, 32, 3)))["params"]
    return build_graph_structure("resnet", shapes)


def init_apply(model, obs):
    """Jitted init and apply (eager Flax calls compile op by op, which is slow on small CPUs)."""
    variables = jax.jit(model.init)(KEY, obs)
    return variables, jax.jit(model.apply)


@functools.cache
def encoder(depth=18, conv="gcn", norm="layer"):
    """(structure, variables, jitted apply) of a hierarchical encoder on ResNet-``depth``, shared by tests."""
    structure = resnet_structure(depth)
    return (structure,) + init_apply(HierarchicalGCN(structure, conv=conv, norm=norm), random_obs(structure))


def random_obs(structure, seed=0, batch=()):
    x = np.random.default_rng(seed).standard_normal(batch + (structure.num_nodes, NUM_FEATURES))
    return GraphObservation(nodes=jnp.asarray(x, jnp.float32))


@pytest.mark.parametrize("symmetrize", [True, False])
def test_gcn_layer_equals_dense_formula(symmetrize):
    graph = chain_graph()
    layer = GCNLayer(3, symmetrize=symmetrize, use_bias=False)
    params = layer.init(KEY, graph)
    out = np.asarray(jax.nn.relu(layer.apply(params, graph).nodes))

    n = graph.nodes.shape[0]
    a = np.zeros((n, n))
    a[np.asarray(graph.receivers), np.asarray(graph.senders)] = 1.0  # a[v, u] = 1 for an edge u -> v
    a_hat = (a + a.T if symmetrize else a) + np.eye(n)
    d_in, d_out = a_hat.sum(1), a_hat.sum(0)
    a_tilde = a_hat / np.sqrt(d_in)[:, None] / np.sqrt(d_out)[None, :]
    if symmetrize:
        np.testing.assert_allclose(a_tilde, a_tilde.T)  # Kipf & Welling's D^-1/2 (A + I) D^-1/2
    w = np.asarray(params["params"]["linear"]["kernel"])
    expected = np.maximum(a_tilde @ np.asarray(graph.nodes) @ w, 0.0)  # Eq. 1: σ(Ã H W)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("conv,norm", [("gcn", "batch"), ("gcn", "layer"), ("gat", "batch")])
def test_padding_does_not_change_real_nodes(conv, norm):
    graph = chain_graph()
    padded = jraph.pad_with_graphs(graph, n_node=9, n_edge=8, n_graph=3)
    model = GCN((8, 8), conv=conv, norm=norm)
    params = jax.jit(model.init)(KEY, graph)
    plain = jax.jit(model.apply)(params, graph).nodes
    mask = jraph.get_node_padding_mask(padded)
    out = jax.jit(model.apply)(params, padded, node_mask=mask).nodes
    np.testing.assert_allclose(out[:5], plain, rtol=1e-5, atol=1e-6)
    assert (out[5:] == 0).all()


def test_gat_attention_is_a_softmax_over_neighbours():
    graph = chain_graph()
    layer = GATLayer(4, heads=2)
    params = layer.init(KEY, graph)
    # Constant node features: every attention-weighted average of the same vector is that vector.
    const = graph._replace(nodes=jnp.ones_like(graph.nodes))
    out = np.asarray(layer.apply(params, const).nodes)
    np.testing.assert_allclose(out, np.tile(out[:1], (5, 1)), rtol=1e-5)


def test_docstring_examples_run():
    result = doctest.testmod(gns_jax.gcn, verbose=False)
    assert result.attempted >= 4 and result.failed == 0


def reference_hierarchy(structure, variables, nodes, conv, norm, hidden=64):
    """§4.1 as a plain loop over unpadded blocks, sharing the scanned body's GCN parameters."""
    gcn = GCN((hidden, hidden), conv=conv, norm=norm)
    gcn_vars = {"params": variables["params"]["hierarchy"]["block"]["gcn"]}
    summary, all_h = jnp.zeros(hidden), []
    for block in structure.blocks:
        slot = {v: i for i, v in enumerate(block.nodes)}
        edges = [(slot[u], slot[v]) for u, v in structure.edges if u in slot and v in slot]
        s, r = (np.array(edges, np.int32).reshape(-1, 2).T)
        x = nodes[np.array(block.nodes)]
        x = jnp.concatenate([x, jnp.tile(summary, (len(block.nodes), 1))], 1)
        g = jraph.GraphsTuple(nodes=x, edges=None, globals=None, senders=jnp.asarray(s),
                              receivers=jnp.asarray(r), n_node=jnp.array([len(block.nodes)]),
                              n_edge=jnp.array([len(edges)]))
        h = gcn.apply(gcn_vars, g).nodes
        summary = h.mean(0)
        all_h.append(h)
    return jnp.concatenate([jnp.concatenate(all_h).mean(0), summary])


@pytest.mark.parametrize("conv,norm", [("gcn", "layer"), ("gat", "batch")])
def test_hierarchy_scan_equals_sequential_loop(conv, norm):
    structure, variables, apply = encoder(18, conv, norm)
    obs = random_obs(structure, seed=5)
    h = apply(variables, obs)
    assert h.shape == (encoder_output_dim(conv),)
    reference = jax.jit(lambda v, x: reference_hierarchy(structure, v, x, conv, norm))
    np.testing.assert_allclose(h, reference(variables, obs.nodes), rtol=1e-4, atol=1e-5)
    if conv == "gcn":  # the unrolled scan (the default on accelerators) computes the same function
        unrolled = jax.jit(HierarchicalGCN(structure, conv=conv, norm=norm, unroll=True).apply)(variables, obs)
        np.testing.assert_allclose(unrolled, h, rtol=1e-5, atol=1e-6)


def test_one_parameter_set_runs_on_resnet18_and_resnet34():
    s18, s34 = resnet_structure(18), resnet_structure(34)
    assert (s18.num_blocks, s34.num_blocks) == (10, 18)
    _, variables, apply18 = encoder(18)
    h18 = apply18(variables, random_obs(s18))
    h34 = jax.jit(HierarchicalGCN(s34).apply)(variables, random_obs(s34))  # the same parameters, unchanged
    assert h18.shape == h34.shape and bool(jnp.all(jnp.isfinite(h34)))
    shapes34 = jax.eval_shape(HierarchicalGCN(s34).init, KEY, random_obs(s34))
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, shapes34)


@pytest.mark.parametrize("conv,norm", [("gcn", "layer"), ("gat", "batch")])
def test_permuting_nodes_inside_blocks_leaves_h_unchanged(conv, norm):
    structure, variables, apply = encoder(18, conv, norm)
    obs = random_obs(structure, seed=1)
    perm = np.random.default_rng(2)
    shuffled = structure.__class__(**{
        **{f: getattr(structure, f) for f in structure.__dataclass_fields__},
        "blocks": tuple(Block(b.name, tuple(perm.permutation(np.array(b.nodes)).tolist()))
                        for b in structure.blocks),
    })
    assert shuffled.blocks != structure.blocks
    h = apply(variables, obs)
    h_perm = jax.jit(HierarchicalGCN(shuffled, conv=conv, norm=norm).apply)(variables, obs)
    np.testing.assert_allclose(h, h_perm, rtol=1e-5, atol=1e-6)


def test_batched_observations_match_single_ones():
    structure, variables, apply = encoder(18)
    batch = random_obs(structure, batch=(3,))
    hb = apply(variables, batch)  # leading axis handled inside (nn.vmap, shared parameters)
    hv = jax.jit(jax.vmap(apply, in_axes=(None, 0)))(variables, batch)
    assert hb.shape == (3, 128)
    np.testing.assert_allclose(hb, hv, rtol=1e-5, atol=1e-6)
    h1 = apply(variables, GraphObservation(batch.nodes[1]))
    np.testing.assert_allclose(hb[1], h1, rtol=1e-5, atol=1e-6)
    batched_init = jax.eval_shape(HierarchicalGCN(structure).init, KEY, batch)
    assert jax.tree.map(jnp.shape, batched_init) == jax.tree.map(jnp.shape, variables)


def mlp_params(hidden=(16, 16), seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    sizes = (784,) + hidden + (10,)
    names = [f"dense_{i}" for i in range(len(hidden))] + ["head"]
    return {n: {"kernel": (scale * rng.standard_normal((i, o)) / np.sqrt(i)).astype(np.float32),
                "bias": np.zeros(o, np.float32)}
            for n, i, o in zip(names, sizes[:-1], sizes[1:], strict=True)}


def test_decision_traces_once_per_architecture():
    """Features, encoder and a policy-like head in one jit: traced once, whatever the values."""
    params = mlp_params()
    structure = build_graph_structure("mlp", params)
    model = make_encoder("gcn", structure)
    head = jax.random.normal(KEY, (encoder_output_dim("gcn"),))
    variables = jax.jit(model.init)(KEY, node_features(structure, params, params, 1e-3, 1.0))
    traces = []

    @jax.jit
    def act(variables, params, grads, lr, loss):
        traces.append(1)  # Python side effect: runs only while tracing
        h = model.apply(variables, node_features(structure, params, grads, lr, loss))
        return jnp.tanh(h @ head)

    for i in range(6):
        grads = {k: {n: a * (i + 1.0) for n, a in v.items()} for k, v in params.items()}
        assert np.isfinite(float(act(variables, params, grads, 10.0 ** -(i + 1), 2.0 / (i + 1))))
    assert len(traces) == 1
    # node_features is jitted with the structure static: an equal structure reuses its compilation.
    before = node_features._cache_size()
    node_features(build_graph_structure("mlp", mlp_params(seed=3)), params, params, 1e-3, 1.0)
    assert node_features._cache_size() == before


def test_hierarchy_sees_single_node_blocks_unlike_per_block_batch_norm():
    """The MLP's blocks have one node each: per-block batch statistics erase every node feature there."""
    params = mlp_params()
    structure = build_graph_structure("mlp", params)
    obs = node_features(structure, params, params, 1e-3, 1.0)
    scaled = node_features(structure, mlp_params(seed=1, scale=3.0), params, 1e-3, 1.0)
    other_lr = node_features(structure, params, params, 1e-6, 1.0)
    for norm, sensitive in (("layer", True), ("batch", False)):
        variables, apply = init_apply(HierarchicalGCN(structure, norm=norm), obs)
        h, h2, h3 = (apply(variables, o) for o in (obs, scaled, other_lr))
        assert bool(jnp.any(jnp.abs(h - h2) > 1e-4)) == sensitive, norm
        assert bool(jnp.any(jnp.abs(h - h3) > 1e-4)) == sensitive, norm


@pytest.mark.parametrize("name", ["css", "srls"])
def test_baseline_encoders(name):
    structure = resnet_structure(18)
    obs = random_obs(structure, batch=(2,))
    variables, apply = init_apply(make_encoder(name, structure, hidden=32, layers=2), obs)
    h = apply(variables, obs)
    assert h.shape == (2, encoder_output_dim(name, 32)) and bool(jnp.all(jnp.isfinite(h)))
    head_only = np.allclose(apply(variables, GraphObservation(obs.nodes.at[:, 0].add(5.0))), h)
    assert head_only == (name == "srls")  # SRLS sees the final layer only; CSS sees every node
    assert not np.allclose(apply(variables, GraphObservation(obs.nodes.at[:, -1, :6].add(5.0))), h)


def test_make_encoder_names():
    structure = resnet_structure(18)
    assert make_encoder("gcn", structure) == HierarchicalGCN(structure, conv="gcn")
    gat = HierarchicalGCN(structure, 32, conv="gat", heads=2)
    assert make_encoder("gat", structure, hidden=32, heads=2) == gat
    assert encoder_output_dim("gat", 32) == 64 and encoder_output_dim("css", 32) == 32


def test_make_encoder_rejects_unknown_names():
    structure = build_graph_structure("mlp", mlp_params())
    with pytest.raises(ValueError, match="unknown encoder"):
        make_encoder("transformer", structure)
    with pytest.raises(ValueError, match="norm"):
        make_encoder("gcn", structure, norm="group").init(KEY, random_obs(structure))
