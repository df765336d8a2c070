"""Graph encoders of the scheduler's state: Eq. 1 GCN, the GAT variant (Table 14), the §4.1 hierarchy, baselines.

**Eq. 1.** ``H^{l+1} = σ(Norm(Ã H^l W^l))`` with ``Ã = D^{-1/2} (A + Aᵀ + I) D^{-1/2}``: the directed target
graph is symmetrized before normalization. Messages then flow both along the computation (a layer sees what
feeds it) and against it (a layer sees what its gradient comes back through), which is how a learning-rate
change propagates through a network; in-edges only would leave every block entry (``conv1``, Q/K/V) seeing
nothing but itself, and Kipf & Welling's symmetric normalization assumes an undirected graph. ``symmetrize=False``
gives ``Ã = D_in^{-1/2} (Aᵀ + I) D_out^{-1/2}`` (in-edges only). ``GCNLayer``/``GATLayer``/``GCN`` work on any
``jraph.GraphsTuple`` (padded or batched ones included) and are usable on their own.

**Normalization.** ``norm='batch'`` is batch normalization as a pure function (no running state): per channel,
mean and variance over the real nodes of all graphs in the call (padding masked), then a learned scale and
shift. ``norm='layer'`` normalizes each node over its channels; ``'none'`` skips it.

**Hierarchy (§4.1).** ``HierarchicalGCN`` encodes the blocks G_0..G_{M+1} in order with *one* shared ``GCN``:
block i's nodes get ``[x_v, h_{G_{i-1}}]`` as input (``h_{G_{-1}} = 0``), its summary ``h_{G_i}`` is the mean of its
node embeddings, and ``h_G`` is the mean over all nodes. All blocks are padded to one node/edge count and
stacked (``GraphStructure.block_stack``), and a single ``nn.scan`` runs the shared body over the stack carrying
the summary: one compiled body, any depth, parameters independent of the architecture (the same parameters run
on ResNet-18 and ResNet-34), one compilation per architecture. The output is ``h = [h_G, h_{G_{M+1}}]``
(``2 · hidden``): the paper's graph feature plus the output block's summary, the end of the ordered chain.

The hierarchy defaults to ``norm='layer'``: batch statistics over one block's nodes are degenerate there. A
single-node block (every MLP block, every classifier head) normalizes to the constant shift, two-node blocks
(VGG layers) to ±1, and any feature equal on all nodes of a block (the previous LR, the loss, the incoming
summary) is subtracted away; the paper's PyTorch BN escapes this only through running statistics, which a
functional encoder has not got. ``norm='batch'`` remains available (``tests/test_gcn.py`` shows the collapse).

**Baselines (Table 4 and SRLS).** ``CSSEncoder``: all node features concatenated, then an MLP (no graph).
``SRLSEncoder``: the features of the final layer only, then an MLP. ``make_encoder(name, structure)`` builds any
of 'gcn', 'gat', 'css', 'srls'; every encoder maps a ``GraphObservation`` (optionally with leading batch axes)
to ``h``.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph

from gns_jax.graph import NUM_FEATURES, GraphObservation, GraphStructure

NORMS = ("batch", "layer", "none")
CONVS = ("gcn", "gat")
ENCODERS = ("gcn", "gat", "css", "srls")


def _message_edges(graph: jraph.GraphsTuple, symmetrize: bool, self_loops: bool):
    """Senders/receivers of Ã: optionally both directions and self-loops (node count from ``graph.nodes``)."""
    n = graph.nodes.shape[0]
    senders, receivers = graph.senders, graph.receivers
    if symmetrize:
        senders, receivers = jnp.concatenate([senders, receivers]), jnp.concatenate([receivers, senders])
    if self_loops:
        loop = jnp.arange(n, dtype=senders.dtype)
        senders, receivers = jnp.concatenate([senders, loop]), jnp.concatenate([receivers, loop])
    return senders, receivers, n


class GCNLayer(nn.Module):
    """One Eq. 1 propagation without the nonlinearity: ``Ã H W (+ b)`` on a ``jraph.GraphsTuple``.

    ``Ã = D_in^{-1/2} Â D_out^{-1/2}`` with ``Â = A + Aᵀ + I`` by default (``symmetrize``, ``self_loops``), which is
    Kipf & Welling's ``D^{-1/2}(A + I)D^{-1/2}`` of the undirected graph. Returns the graph with new nodes.
    """

    features: int
    symmetrize: bool = True
    self_loops: bool = True
    use_bias: bool = True

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple) -> jraph.GraphsTuple:
        senders, receivers, n = _message_edges(graph, self.symmetrize, self.self_loops)
        hw = nn.Dense(self.features, use_bias=False, name="linear")(graph.nodes)
        ones = jnp.ones(senders.shape, hw.dtype)
        deg_in = jax.ops.segment_sum(ones, receivers, n)
        deg_out = jax.ops.segment_sum(ones, senders, n)
        weight = jax.lax.rsqrt(deg_out[senders] * deg_in[receivers])
        out = jax.ops.segment_sum(weight[:, None] * hw[senders], receivers, n)
        if self.use_bias:
            out = out + self.param("bias", nn.initializers.zeros, (self.features,))
        return graph._replace(nodes=out)


class GATLayer(nn.Module):
    """Graph attention (Veličković et al. 2018), the encoder variant of Table 14, on a ``jraph.GraphsTuple``.

    ``heads`` heads of ``features // heads`` channels, concatenated; attention over the same neighbourhood as
    ``GCNLayer`` (symmetrized, with self-loops), softmax over each node's incoming edges.
    """

    features: int
    heads: int = 4
    symmetrize: bool = True
    self_loops: bool = True
    negative_slope: float = 0.2

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple) -> jraph.GraphsTuple:
        if self.features % self.heads:
            raise ValueError(f"features ({self.features}) must be divisible by heads ({self.heads})")
        senders, receivers, n = _message_edges(graph, self.symmetrize, self.self_loops)
        per_head = self.features // self.heads
        z = nn.Dense(self.features, use_bias=False, name="linear")(graph.nodes).reshape(n, self.heads, per_head)
        init = nn.initializers.lecun_normal()
        a_src = self.param("att_src", init, (self.heads, per_head))
        a_dst = self.param("att_dst", init, (self.heads, per_head))
        logits = jnp.sum(z[senders] * a_src, -1) + jnp.sum(z[receivers] * a_dst, -1)
        alpha = jraph.segment_softmax(nn.leaky_relu(logits, self.negative_slope), receivers, n)
        out = jax.ops.segment_sum(alpha[..., None] * z[senders], receivers, n).reshape(n, self.features)
        out = out + self.param("bias", nn.initializers.zeros, (self.features,))
        return graph._replace(nodes=out)


class MaskedBatchNorm(nn.Module):
    """Batch normalization as a pure function: statistics over the real nodes of the call, no running state.

    ``x``: ``[num_nodes, C]``; ``mask``: ``[num_nodes]`` (True for real nodes) or None. Padding rows return 0.
    """

    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        m = jnp.ones(x.shape[:1], x.dtype) if mask is None else mask.astype(x.dtype)
        count = jnp.maximum(jnp.sum(m), 1.0)
        mean = jnp.sum(x * m[:, None], 0) / count
        var = jnp.sum(jnp.square(x - mean) * m[:, None], 0) / count
        y = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
        y = y * self.param("scale", nn.initializers.ones, (x.shape[-1],))
        y = y + self.param("bias", nn.initializers.zeros, (x.shape[-1],))
        return y * m[:, None]


class GCN(nn.Module):
    """Eq. 1 stack on any ``jraph.GraphsTuple``: ``H^{l+1} = ReLU(Norm(Ã H^l W^l))``, one layer per ``features``.

    Example (a 3-node chain; ``conv='gat'`` for Table 14's attention variant):

    >>> import jax, jax.numpy as jnp, jraph
    >>> graph = jraph.GraphsTuple(nodes=jnp.ones((3, 8)), edges=None, globals=None,
    ...                           senders=jnp.array([0, 1]), receivers=jnp.array([1, 2]),
    ...                           n_node=jnp.array([3]), n_edge=jnp.array([2]))
    >>> model = GCN(features=(64, 64))
    >>> variables = model.init(jax.random.PRNGKey(0), graph)
    >>> model.apply(variables, graph).nodes.shape
    (3, 64)

    ``node_mask`` (``[num_nodes]``, True for real nodes) excludes padding from the batch statistics and zeroes
    padding rows; for graphs padded with ``jraph.pad_with_graphs`` pass ``jraph.get_node_padding_mask(graph)``.
    """

    features: Sequence[int] = (64, 64)
    conv: str = "gcn"
    norm: str = "batch"
    heads: int = 4
    symmetrize: bool = True

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple, node_mask: jax.Array | None = None) -> jraph.GraphsTuple:
        if self.conv not in CONVS or self.norm not in NORMS:
            raise ValueError(f"conv must be one of {CONVS} and norm one of {NORMS}, got {self.conv!r}, {self.norm!r}")
        mask = None if node_mask is None else node_mask.astype(graph.nodes.dtype)[:, None]
        for i, f in enumerate(self.features):
            if self.conv == "gcn":
                graph = GCNLayer(f, symmetrize=self.symmetrize, use_bias=self.norm == "none", name=f"conv_{i}")(graph)
            else:
                graph = GATLayer(f, heads=self.heads, symmetrize=self.symmetrize, name=f"conv_{i}")(graph)
            h = graph.nodes
            if self.norm == "batch":
                h = MaskedBatchNorm(name=f"norm_{i}")(h, node_mask)
            elif self.norm == "layer":
                h = nn.LayerNorm(name=f"norm_{i}")(h)
            h = nn.relu(h)
            graph = graph._replace(nodes=h if mask is None else h * mask)
        return graph


class _BlockStep(nn.Module):
    """The scanned body: encode one padded block given the previous block's summary; return its summary."""

    features: Sequence[int]
    conv: str
    norm: str
    heads: int

    @nn.compact
    def __call__(self, summary: jax.Array, block):
        x, senders, receivers, n_node, n_edge, mask = block
        m = mask.astype(x.dtype)[:, None]
        h = jnp.concatenate([x, jnp.broadcast_to(summary, (x.shape[0], summary.shape[-1]))], -1) * m
        graph = jraph.GraphsTuple(nodes=h, edges=None, globals=None, senders=senders, receivers=receivers,
                                  n_node=n_node, n_edge=n_edge)
        h = GCN(self.features, self.conv, self.norm, self.heads, name="gcn")(graph, node_mask=mask).nodes
        return jnp.sum(h * m, 0) / jnp.maximum(jnp.sum(m), 1.0), h


class _Hierarchy(nn.Module):
    structure: GraphStructure
    features: Sequence[int]
    conv: str
    norm: str
    heads: int
    unroll: int | None

    @nn.compact
    def __call__(self, nodes: jax.Array) -> jax.Array:
        stack = self.structure.block_stack()
        g = stack.graphs
        x = jnp.concatenate([nodes, jnp.zeros((1, nodes.shape[-1]), nodes.dtype)])[stack.node_index]
        mask = jnp.asarray(stack.node_mask)
        blocks = (x, jnp.asarray(g.senders), jnp.asarray(g.receivers), jnp.asarray(g.n_node),
                  jnp.asarray(g.n_edge), mask)
        scan = nn.scan(_BlockStep, variable_broadcast="params", split_rngs={"params": False},
                       in_axes=0, out_axes=0, length=self.structure.num_blocks, unroll=_unroll(self.unroll))
        summary0 = jnp.zeros((self.features[-1],), nodes.dtype)
        last, h = scan(self.features, self.conv, self.norm, self.heads, name="block")(summary0, blocks)
        m = mask.astype(h.dtype)[..., None]
        h_graph = jnp.sum(h * m, (0, 1)) / jnp.sum(m)
        return jnp.concatenate([h_graph, last])


def _unroll(unroll: int | bool | None) -> int | bool:
    """``None``: a rolled loop on CPU, fully unrolled (``True``) on accelerators."""
    if unroll is None:
        return 1 if jax.default_backend() == "cpu" else True
    return unroll


def _batched(module_cls, batch_dims: int):
    for _ in range(batch_dims):
        module_cls = nn.vmap(module_cls, variable_axes={"params": None}, split_rngs={"params": False})
    return module_cls


def _nodes(obs: GraphObservation | jax.Array) -> jax.Array:
    nodes = obs.nodes if isinstance(obs, GraphObservation) else obs
    if nodes.ndim < 2:
        raise ValueError(f"node features must be [..., num_nodes, features], got shape {nodes.shape}")
    return nodes


class HierarchicalGCN(nn.Module):
    """The GNS state encoder (Eq. 1 + §4.1 hierarchy): ``GraphObservation -> h = [h_G, h_{G_{M+1}}]``.

    Attributes:
      structure: the static ``GraphStructure`` of the target (closed over; its block stack is a constant).
      hidden, layers: GCN width and depth (paper: 64, 2).
      conv: 'gcn' (Eq. 1) or 'gat' (Table 14).
      norm: 'layer' (default, see module docstring), 'batch' or 'none'.
      heads: attention heads of the GAT variant.
      unroll: blocks per scan iteration (``lax.scan``'s ``unroll``). ``None`` (default): 1 on CPU, all blocks on
        GPU/TPU, where every loop iteration costs a device-host round trip (ResNet-34 on an H200: 0.63 ms with
        ``unroll=1``, 0.34 ms unrolled). Either way the body is traced once and the program compiled once.

    Leading batch axes of ``obs.nodes`` are vmapped with shared parameters. Output: ``[..., 2 * hidden]``.
    """

    structure: GraphStructure
    hidden: int = 64
    layers: int = 2
    conv: str = "gcn"
    norm: str = "layer"
    heads: int = 4
    unroll: int | None = None

    @nn.compact
    def __call__(self, obs: GraphObservation | jax.Array) -> jax.Array:
        nodes = _nodes(obs)
        core = _batched(_Hierarchy, nodes.ndim - 2)
        return core(self.structure, (self.hidden,) * self.layers, self.conv, self.norm, self.heads, self.unroll,
                    name="hierarchy")(nodes)


class _MLP(nn.Module):
    hidden: int
    layers: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.layers):
            x = nn.relu(nn.Dense(self.hidden, name=f"dense_{i}")(x))
        return x


class CSSEncoder(nn.Module):
    """Table 4's CSS ablation: every node's features concatenated into one vector, then an MLP (no graph).

    The input size is ``num_nodes · 8``, so its parameters are tied to one architecture. Output ``[..., hidden]``.
    """

    structure: GraphStructure
    hidden: int = 64
    layers: int = 2

    @nn.compact
    def __call__(self, obs: GraphObservation | jax.Array) -> jax.Array:
        nodes = _nodes(obs)
        return _MLP(self.hidden, self.layers, name="mlp")(nodes.reshape(nodes.shape[:-2] + (-1,)))


class SRLSEncoder(nn.Module):
    """SRLS state (Xu et al. 2019): statistics of the final layer only (the output node), then an MLP.

    The final layer is the last node of the output block (``head``; ``classifier/out_proj``); its features include
    the previous LR and the loss. Output ``[..., hidden]``.
    """

    structure: GraphStructure
    hidden: int = 64
    layers: int = 2

    @nn.compact
    def __call__(self, obs: GraphObservation | jax.Array) -> jax.Array:
        nodes = _nodes(obs)
        return _MLP(self.hidden, self.layers, name="mlp")(nodes[..., self.structure.blocks[-1].nodes[-1], :])


def make_encoder(name: str, structure: GraphStructure, hidden: int = 64, layers: int = 2, **kwargs) -> nn.Module:
    """An encoder ``obs -> h`` by config name: 'gcn', 'gat' (``HierarchicalGCN``), 'css', 'srls'.

    ``kwargs`` go to ``HierarchicalGCN`` (``norm``, ``heads``, ``unroll``).
    """
    if name in CONVS:
        return HierarchicalGCN(structure, hidden=hidden, layers=layers, conv=name, **kwargs)
    if name in ("css", "srls"):
        if kwargs:
            raise ValueError(f"encoder {name!r} takes no options {sorted(kwargs)}")
        cls = CSSEncoder if name == "css" else SRLSEncoder
        return cls(structure, hidden=hidden, layers=layers)
    raise ValueError(f"unknown encoder {name!r}; choose one of {ENCODERS}")


def encoder_output_dim(name: str, hidden: int = 64) -> int:
    """Size of ``h`` for an encoder name: ``2 * hidden`` for the hierarchical GCN/GAT, ``hidden`` otherwise."""
    return 2 * hidden if name in CONVS else hidden


__all__ = [
    "CONVS",
    "ENCODERS",
    "NORMS",
    "NUM_FEATURES",
    "CSSEncoder",
    "GATLayer",
    "GCN",
    "GCNLayer",
    "HierarchicalGCN",
    "MaskedBatchNorm",
    "SRLSEncoder",
    "encoder_output_dim",
    "make_encoder",
]
