"""The target graph (§4.1): node/edge/block counts derived from the architectures, residual edges, features."""

import functools
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gns_jax.graph import (
    FEATURE_NAMES,
    SHORTCUT,
    GraphObservation,
    build_graph_structure,
    describe_graph,
    node_features,
)
from gns_jax.graph.features import decades, slog
from gns_jax.targets import MLP, VGG, ResNet
from gns_jax.targets.resnet import STAGE_SIZES
from gns_jax.targets.vgg import VGG16_LAYOUT

KEY = jax.random.PRNGKey(0)
IMAGE = jnp.zeros((1, 32, 32, 3))


def shapes(model, x):
    """Full-width parameter tree without allocating it."""
    return jax.eval_shape(model.init, KEY, x)["params"]


def transformer_params(num_layers, hidden=768, ffn=3072, vocab=50265, positions=514, token_types=True,
                       make=jax.ShapeDtypeStruct, num_labels=2):
    """A Transformer encoder's params tree under the naming contract, from shapes (or arrays with ``make``)."""

    def dense(i, o):
        return {"kernel": make((i, o), jnp.float32), "bias": make((o,), jnp.float32)}

    def norm():
        return {"scale": make((hidden,), jnp.float32), "bias": make((hidden,), jnp.float32)}

    emb = {"word_embeddings": {"embedding": make((vocab, hidden), jnp.float32)},
           "position_embeddings": {"embedding": make((positions, hidden), jnp.float32)}, "layer_norm": norm()}
    if token_types:
        emb["token_type_embeddings"] = {"embedding": make((2, hidden), jnp.float32)}
    params = {"embeddings": emb,
              "classifier": {"dense": dense(hidden, hidden), "out_proj": dense(hidden, num_labels)}}
    for i in range(num_layers):
        params[f"layer_{i}"] = {
            "attention": {n: dense(hidden, hidden) for n in ("query", "key", "value", "output")},
            "attention_layer_norm": norm(), "intermediate": dense(hidden, ffn), "output": dense(ffn, hidden),
            "output_layer_norm": norm()}
    return params


def edge_set(structure, kind=None):
    names = structure.node_names
    return {(names[u], names[v]) for (u, v), k in zip(structure.edges, structure.edge_kinds, strict=True)
            if kind is None or k == kind}


# ------------------------------------------------------------------------------------------------ counts


@pytest.mark.parametrize("depth,blocks", [(18, 10), (34, 18)])
def test_resnet_counts_follow_the_architecture(depth, blocks):
    s = build_graph_structure("resnet", shapes(ResNet(depth=depth), IMAGE))
    stages = STAGE_SIZES[depth]
    n_blocks = sum(stages)
    # The first block of stages 2-4 halves the resolution and doubles the width: a projection shortcut.
    proj = [int(stage > 0 and b == 0) for stage, n in enumerate(stages) for b in range(n)]
    assert sum(proj) == 3
    # stem conv + BN, 2 convs + 2 BNs per basic block, proj conv + BN per projection, the linear head.
    assert s.num_nodes == 2 + 4 * n_blocks + 2 * sum(proj) + 1
    # Arrows: stem conv->BN; per block conv1->bn1->conv2->bn2 (3) and proj_conv->proj_bn; every reader of a block
    # input (conv1 and proj_conv) gets one edge from each tensor summed into that input: 1 for the stem output,
    # 2 (main path + shortcut) for a block output; the head reads the last block's output (2).
    expected = (1 + sum(3 + p for p in proj) + (1 + proj[0])
                + sum(2 * (1 + p) for p in proj[1:]) + 2)
    assert s.num_edges == expected
    assert s.num_blocks == blocks == n_blocks + 2
    assert [b.name for b in s.blocks] == ["input"] + [f"block_{i}" for i in range(n_blocks)] + ["output"]
    assert [len(b.nodes) for b in s.blocks[1:-1]] == [4 + 2 * p for p in proj]


def test_resnet_residual_edges_present():
    s = build_graph_structure("resnet", shapes(ResNet(depth=18), IMAGE))
    skip = edge_set(s, SHORTCUT)
    assert ("stem_bn", "block_1/conv1") in skip  # identity shortcut of block_0
    assert ("block_0/bn2", "block_2/conv1") in skip and ("block_0/bn2", "block_2/proj_conv") in skip  # block_1
    assert ("block_1/bn2", "block_2/proj_conv") in skip  # the projection reads the block input...
    assert ("block_2/proj_conv", "block_2/proj_bn") in skip  # ...is its own nodes...
    assert ("block_2/proj_bn", "block_3/conv1") in skip  # ...and joins the block output
    assert ("block_6/bn2", "head") in skip  # identity shortcut of the last block
    flow = edge_set(s, "flow")
    assert ("block_1/bn2", "block_2/conv1") in flow and ("block_7/bn2", "head") in flow
    assert ("block_3/conv1", "block_3/bn1") in flow


def test_vgg16_counts():
    s = build_graph_structure("vgg", shapes(VGG(), IMAGE))
    n_conv = sum(1 for item in VGG16_LAYOUT if item != "M")
    assert n_conv == 13
    assert s.num_nodes == 2 * n_conv + 1  # conv + BN per layer, head
    assert s.num_edges == 2 * n_conv  # a plain chain
    assert s.num_blocks == n_conv + 1  # conv_0/bn_0 is G_0, one block per further layer, head
    assert s.blocks[0].name == "input" and s.blocks[-1].name == "output"
    assert not edge_set(s, SHORTCUT)


@pytest.mark.parametrize("hidden", [(128, 128), (64,)])
def test_mlp_counts(hidden):
    s = build_graph_structure("mlp", shapes(MLP(hidden=hidden), jnp.zeros((1, 784))))
    assert s.num_nodes == len(hidden) + 1
    assert s.num_edges == len(hidden)
    assert s.num_blocks == len(hidden) + 1
    assert s.node_names[-1] == "head"


@pytest.mark.parametrize("layers,token_types,blocks", [(12, True, 14), (24, False, 26)])
def test_transformer_counts(layers, token_types, blocks):
    hidden = 768 if layers == 12 else 1024
    s = build_graph_structure("transformer", transformer_params(layers, hidden, 4 * hidden, token_types=token_types))
    n_emb = 3 if token_types else 2
    # embeddings + LN; Q, K, V, attention output, LN, FFN in, FFN out, LN per layer; classifier dense + out_proj.
    assert s.num_nodes == n_emb + 1 + 8 * layers + 2
    # Embeddings sum into the LN; per layer: Q,K,V -> O, O -> LN1 -> FFN in -> FFN out -> LN2, LN1 -> LN2
    # (residual), and the layer input read by Q, K, V and LN1 (residual); classifier chain, read of last LN2.
    assert s.num_edges == n_emb + layers * (8 + 4) + 1 + 1
    assert s.num_blocks == blocks
    skip = edge_set(s, SHORTCUT)
    for i in range(layers):
        assert (f"layer_{i}/attention_layer_norm", f"layer_{i}/output_layer_norm") in skip
        prev = "embeddings/layer_norm" if i == 0 else f"layer_{i - 1}/output_layer_norm"
        assert (prev, f"layer_{i}/attention_layer_norm") in skip
        assert (prev, f"layer_{i}/attention/query") in edge_set(s, "flow")
    assert len(skip) == 2 * layers


def test_the_transformer_module_follows_the_naming_contract():
    transformer = pytest.importorskip("gns_jax.targets.transformer")
    if not all(hasattr(transformer, n) for n in ("EncoderConfig", "TransformerClassifier", "init_params")):
        pytest.skip("the Transformer module has no EncoderConfig/TransformerClassifier/init_params")
    config = transformer.EncoderConfig(vocab_size=50, hidden_size=16, num_layers=3, num_heads=2,
                                       intermediate_size=32, max_position_embeddings=20, type_vocab_size=1)
    model = transformer.TransformerClassifier(config)
    params = jax.eval_shape(lambda k: transformer.init_params(model, k), KEY)
    s = build_graph_structure("transformer", params)
    assert (s.num_nodes, s.num_blocks) == (4 + 3 * 8 + 2, 3 + 2)
    assert s == build_graph_structure("transformer", transformer_params(3, 16, 32, vocab=50, positions=20))


def test_blocks_partition_nodes_and_names_are_param_paths():
    params = shapes(ResNet(depth=34), IMAGE)
    s = build_graph_structure("resnet", {"params": params, "batch_stats": {}})  # a variables dict works too
    ids = [v for b in s.blocks for v in b.nodes]
    assert sorted(ids) == list(range(s.num_nodes))
    for name, w in zip(s.node_names, s.weight_paths, strict=True):
        leaf = params
        for k in w:
            leaf = leaf[k]
        assert "/".join(w[:-1]) == name and hasattr(leaf, "shape")


def test_structure_is_hashable_by_value_and_errors_are_clear():
    a = build_graph_structure("resnet", shapes(ResNet(depth=18), IMAGE))
    b = build_graph_structure("resnet", shapes(ResNet(depth=18, width=0.25), IMAGE))
    assert a == b and hash(a) == hash(b)  # same graph whatever the width
    with pytest.raises(ValueError, match="unknown architecture"):
        build_graph_structure("lstm", {})
    with pytest.raises(KeyError, match="head"):
        build_graph_structure("mlp", {"dense_0": {"kernel": 0}})


def test_block_stack_pads_every_block_to_one_shape():
    s = build_graph_structure("resnet", shapes(ResNet(depth=18), IMAGE))
    stack = s.block_stack()
    n = s.max_block_nodes + 1
    assert stack.node_index.shape == stack.node_mask.shape == (s.num_blocks, n)
    assert stack.graphs.n_node.shape == (s.num_blocks, 2)
    assert (stack.graphs.n_node.sum(1) == n).all()
    for b, block in enumerate(s.blocks):
        k = len(block.nodes)
        assert stack.graphs.n_node[b, 0] == k and stack.node_mask[b].sum() == k
        assert list(stack.node_index[b, :k]) == list(block.nodes) and (stack.node_index[b, k:] == s.num_nodes).all()
        real = stack.graphs.senders[b, :stack.graphs.n_edge[b, 0]]
        assert (real < k).all()  # intra-block edges only, in slot numbering
    # block_2 (projection): conv1->bn1->conv2->bn2 and proj_conv->proj_bn.
    assert stack.graphs.n_edge[3, 0] == 4


def test_describe_graph_writes_json_and_png(tmp_path):
    s = build_graph_structure("transformer", transformer_params(2, 16, 32, vocab=11, positions=8))
    out = describe_graph(s, str(tmp_path))
    with open(tmp_path / "graph.json") as f:
        written = json.load(f)
    assert written == out
    assert (out["num_nodes"], out["num_edges"], out["num_blocks"]) == (s.num_nodes, s.num_edges, 4)
    assert out["blocks"][1]["nodes"][0] == "layer_0/attention/query"
    assert sum(len(b["nodes"]) for b in out["blocks"]) == s.num_nodes
    assert os.path.getsize(tmp_path / "graph.png") > 1000


def test_usage_example_in_docs_runs(tmp_path):
    with open(os.path.join(os.path.dirname(__file__), "..", "docs", "graph.md")) as f:
        code = re.search(r"```python\n(.*?)```", f.read(), re.S).group(1)
    namespace = {}
    exec(code.replace('"/tmp/gns_graph"', repr(str(tmp_path))), namespace)
    assert namespace["h"].shape == (128,) and namespace["summary"]["num_blocks"] == 3
    assert (tmp_path / "graph.png").exists()


# ------------------------------------------------------------------------------------------------ features


def init_like(shape_tree, seed=0):
    """Numpy arrays shaped like ``shape_tree`` with initializer-like values (nothing to compile)."""
    rng = np.random.default_rng(seed)

    def make(path, leaf):
        name = path[-1].key
        if name == "scale":
            return np.ones(leaf.shape, np.float32)
        if name == "bias":
            return np.zeros(leaf.shape, np.float32)
        std = 0.02 if name == "embedding" else 1.0 / np.sqrt(np.prod(leaf.shape[:-1]))  # kernels: fan-in
        return (std * rng.standard_normal(leaf.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(make, shape_tree)


@functools.cache
def real_params(arch):
    if arch == "mlp":
        tree = shapes(MLP(hidden=(16, 16)), jnp.zeros((1, 784)))
    elif arch == "resnet":
        tree = shapes(ResNet(depth=18, width=0.0625), IMAGE)
    else:
        tree = transformer_params(2, 16, 32, vocab=50, positions=16)
    return init_like(tree)


@functools.cache
def structure_of(arch):
    return build_graph_structure(arch, real_params(arch))


def tmap(fn, *trees):
    """``jax.tree.map`` in one compiled call (eager maps compile every op of every leaf shape)."""
    return jax.jit(lambda *t: jax.tree.map(fn, *t))(*trees)


def test_features_match_the_definition():
    params = real_params("resnet")
    grads = tmap(lambda x: -0.01 * jnp.cos(x) + 1e-3 * x, params)
    s = structure_of("resnet")
    obs = node_features(s, params, grads, 3e-4, 1.7)
    assert isinstance(obs, GraphObservation) and obs.nodes.shape == (s.num_nodes, len(FEATURE_NAMES))
    x = np.asarray(obs.nodes)
    bias = jnp.linspace(-1.0, 3.0, 10)  # a non-trivial bias
    obs2 = node_features(s, {**params, "head": {**params["head"], "bias": bias}}, grads, 3e-4, 1.7)
    head = s.node_names.index("head")
    w, b = np.asarray(params["head"]["kernel"], np.float64), np.asarray(bias, np.float64)
    g = np.abs(np.concatenate([np.ravel(grads["head"]["bias"]), np.ravel(grads["head"]["kernel"])]))
    expected = [slog(w.mean()), decades(w.var()), slog(b.mean()), decades(b.var()), decades(g.mean()),
                decades(g.var()), decades(3e-4), slog(1.7)]
    np.testing.assert_allclose(obs2.nodes[head], np.array(expected, np.float32), rtol=1e-4, atol=1e-5)
    conv = s.node_names.index("block_0/conv1")  # no bias: bias features are 0
    assert x[conv, 2] == 0 and x[conv, 3] == 0
    k = np.asarray(params["block_0"]["conv1"]["kernel"], np.float64)
    np.testing.assert_allclose(x[conv, :2], [slog(k.mean()), decades(k.var())], rtol=1e-4, atol=1e-6)
    bn = s.node_names.index("block_0/bn1")  # normalization layer: weight = scale (all ones at init)
    np.testing.assert_allclose(x[bn, :4], [slog(1.0), decades(0.0), 0.0, decades(0.0)], rtol=1e-5)
    np.testing.assert_allclose(x[:, 6:], np.tile([decades(3e-4), slog(1.7)], (s.num_nodes, 1)), rtol=1e-6)


@pytest.mark.parametrize("arch", ["mlp", "resnet", "transformer"])
def test_features_finite_on_edge_cases(arch):
    params, s = real_params(arch), structure_of(arch)
    zeros = tmap(jnp.zeros_like, params)
    # Explicit float32 constants keep the trees' types identical (a weak type would retrace).
    huge = tmap(lambda x: jnp.full_like(x, 1e30), params)
    mixed = tmap(lambda x: jnp.where(x >= 0, jnp.float32(1e30), jnp.float32(-1e30)), params)
    bad = tmap(lambda x: x.at[(0,) * x.ndim].set(jnp.nan), params)
    infinite = tmap(lambda x: x.at[(0,) * x.ndim].set(jnp.inf), params)
    cases = [(params, zeros, 1e-3, 2.3), (huge, zeros, 1e-12, 2.3), (params, mixed, 1e-12, 0.0),
             (zeros, zeros, 0.0, 0.0), (params, bad, 1e-3, jnp.nan), (bad, infinite, jnp.inf, -jnp.inf),
             (infinite, huge, -1.0, 1e30), (mixed, params, 1e-12, 1e-30)]
    for p, g, lr, loss in cases:
        x = node_features(s, p, g, lr, loss).nodes
        assert bool(jnp.all(jnp.isfinite(x))), (arch, lr, loss)
        assert float(jnp.max(jnp.abs(x))) <= 10.0
    x = np.asarray(node_features(s, huge, zeros, 1e-12, 2.3).nodes)
    assert x[0, 0] == pytest.approx(float(slog(1e30)), rel=1e-5)
    assert x[0, 6] == pytest.approx(float(decades(1e-12)), rel=1e-5)
    np.testing.assert_allclose(x[:, 4:6], -2.0, rtol=1e-6)  # zero gradients sit at the floor
    x = np.asarray(node_features(s, mixed, zeros, 1e-3, 2.3).nodes)
    assert 58 / 8 < x[0, 1] <= 60 / 8 + 1e-4  # log10(var of ±1e30) / 8: no overflow


def test_features_have_comparable_magnitude_across_architectures():
    """Initializer-like weights and gradients of a typical size give one O(1) range for MLP, ResNet, Transformer."""
    ranges = {}
    for arch in ("mlp", "resnet", "transformer"):
        params = real_params(arch)
        grads = tmap(lambda x: 1e-3 * jnp.sin(1e3 * x + 1.0), params)
        x = np.asarray(node_features(structure_of(arch), params, grads, 1e-3, 2.3).nodes)
        ranges[arch] = np.abs(x).max(0)
    worst = np.max(np.stack(list(ranges.values())), 0)
    assert (worst <= 2.5).all(), ranges
