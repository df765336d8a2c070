"""The static graph of a target network (§4.1): nodes, directed edges and the block partition G_0..G_{M+1}.

Computed once, in Python, from the architecture name and the keys of the flax ``params`` collection; nothing here
runs per step. Only parameter *names* are read, so ``jax.eval_shape`` trees work as well as real ones.

**Nodes.** One node per operator with trainable parameters: dense and convolution layers, embeddings, and the
normalization layers (BatchNorm, LayerNorm). Normalization layers are included because their scale and bias are
trained with the same learning rate and because, in post-LN Transformers and in ResNets, they are where residual
branches merge, so the graph stays connected the way the computation is. A node's name is its parameter path
(``block_3/conv1``). Parameter-free operators (ReLU, pooling, addition, attention softmax) are not nodes: they
are contracted into edges.

**Edges.** ``u -> v`` when ``v`` reads a tensor computed from ``u``'s output through parameter-free operators only
(one edge per arrow of the usual block diagram). A residual shortcut is an edge too (kind ``'shortcut'``): an
identity shortcut joins the main-path output of the block before to the readers of the block's output, a
projection shortcut is its own nodes (``proj_conv -> proj_bn``) on the same route. Through an identity shortcut
the block input is represented by its main-path producer (``stem_bn`` or the previous ``bn2``), so chains of
identity blocks do not turn into a transitive closure.

**Blocks.** Each architecture is one short description: a function from the params tree to a list of
``BlockSpec`` (nodes, intra-block edges, which nodes read the block input, what forms its output). One generic
linker turns any such list into the graph; nothing else is architecture-specific.

===========  =====================================================  ===================  ==========================
arch         G_0 (input)                                            G_1..G_M (repeated)  G_{M+1} (output)
===========  =====================================================  ===================  ==========================
mlp          ``dense_0``                                            ``dense_1..``        ``head``
resnet       ``stem_conv``, ``stem_bn``                             basic blocks         ``head``
vgg          ``conv_0``, ``bn_0``                                   one per conv layer   ``head``
transformer  embeddings (word/position/token type) + LayerNorm      one per layer        ``classifier/{dense,out_proj}``
===========  =====================================================  ===================  ==========================

ResNet-18 has 10 blocks, ResNet-34 18, VGG-16 14, a 3-layer MLP 3, a 12-layer Transformer 14 and a 24-layer one
26. VGG is partitioned per conv layer (conv + BN): every repeated block then has the same two-node shape, which
matches "a VGG layer" and needs no knowledge of where the (parameter-free) pooling layers sit.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jraph
import numpy as np

Path = tuple[str, ...]
FLOW, SHORTCUT = "flow", "shortcut"
WEIGHT_KEYS = ("kernel", "scale", "embedding")  # the "weight" of a dense/conv, a norm layer, an embedding


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One block of an architecture description.

    Attributes:
      name: label of the block (``'input'``, ``'block_3'``, ``'layer_7'``, ``'output'``).
      nodes: node names (parameter paths, '/'-joined) in computation order.
      edges: intra-block edges ``(src, dst, kind)``.
      reads: nodes that read the block input on the main path.
      skip_reads: nodes that read the block input through a shortcut (a projection, a post-LN residual).
      out: the node producing the block's main-path output (also what represents it to an identity shortcut).
      skip_out: ``None`` (no shortcut reaches the output), ``'identity'`` or the node ending a projection.
    """

    name: str
    nodes: tuple[str, ...]
    edges: tuple[tuple[str, str, str], ...] = ()
    reads: tuple[str, ...] = ()
    skip_reads: tuple[str, ...] = ()
    out: str = ""
    skip_out: str | None = None


@dataclasses.dataclass(frozen=True)
class Block:
    """A block of the built graph: its label and the global ids of its nodes (their slot order in the stack)."""

    name: str
    nodes: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class GraphStructure:
    """Static graph of one target network; hashable by value (usable as a jit static argument).

    Attributes:
      arch: architecture name.
      node_names: parameter path of every node ('/'-joined).
      weight_paths: path of each node's weight leaf (kernel, scale or embedding).
      bias_paths: path of each node's bias leaf, or ``None``.
      param_paths: every leaf path of each node (their gradients form the node's gradient statistics).
      edges: directed edges ``(src, dst)`` as node ids; ``edge_kinds`` says ``'flow'`` or ``'shortcut'``.
      blocks: G_0..G_{M+1} in computation order.
    """

    arch: str
    node_names: tuple[str, ...]
    weight_paths: tuple[Path, ...]
    bias_paths: tuple[Path | None, ...]
    param_paths: tuple[tuple[Path, ...], ...]
    edges: tuple[tuple[int, int], ...]
    edge_kinds: tuple[str, ...]
    blocks: tuple[Block, ...]

    def __post_init__(self):
        fields = tuple(getattr(self, f.name) for f in dataclasses.fields(self))
        object.__setattr__(self, "_hash", hash(fields))

    def __hash__(self) -> int:  # cached: jit hashes static arguments on every call
        return self._hash

    @property
    def num_nodes(self) -> int:
        return len(self.node_names)

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def max_block_nodes(self) -> int:
        return max(len(b.nodes) for b in self.blocks)

    def block_stack(self) -> BlockStack:
        """All blocks padded to one shape and stacked along a leading block axis (see ``BlockStack``)."""
        return _block_stack(self)


@dataclasses.dataclass(frozen=True)
class BlockStack:
    """The blocks of a structure as one stacked, padded ``jraph.GraphsTuple`` (numpy, static).

    Every block is padded with ``jraph.pad_with_graphs`` to ``max_block_nodes + 1`` nodes (at least one padding
    node), the largest intra-block edge count + 1 edges and 2 graphs (the block and the padding graph), then the
    blocks are stacked: ``graphs.senders`` is ``[num_blocks, E]``, ``graphs.n_node`` ``[num_blocks, 2]``.
    Only intra-block edges are in ``graphs``: each block is encoded on its own (§4.1) and what flows between
    blocks is carried by the block summary. ``node_index`` ``[num_blocks, N]`` gathers node features into the
    slots (padding slots point at index ``num_nodes``, a zero row); ``node_mask`` marks real slots.
    """

    graphs: jraph.GraphsTuple
    node_index: np.ndarray
    node_mask: np.ndarray


@functools.lru_cache(maxsize=64)
def _block_stack(structure: GraphStructure) -> BlockStack:
    n_pad = structure.max_block_nodes + 1
    slot_of = {v: (b, s) for b, block in enumerate(structure.blocks) for s, v in enumerate(block.nodes)}
    per_block = [[] for _ in structure.blocks]
    for u, v in structure.edges:
        (bu, su), (bv, sv) = slot_of[u], slot_of[v]
        if bu == bv:
            per_block[bu].append((su, sv))
    e_pad = max(len(e) for e in per_block) + 1
    graphs, index, mask = [], [], []
    for block, local in zip(structure.blocks, per_block, strict=True):
        e = np.asarray(local, dtype=np.int32).reshape(-1, 2)
        g = jraph.GraphsTuple(nodes=np.zeros((len(block.nodes), 0), np.float32), edges=None, globals=None,
                              senders=e[:, 0], receivers=e[:, 1],
                              n_node=np.array([len(block.nodes)], np.int32), n_edge=np.array([len(e)], np.int32))
        g = jraph.pad_with_graphs(g, n_node=n_pad, n_edge=e_pad, n_graph=2)
        graphs.append(g._replace(nodes=None))
        pad = n_pad - len(block.nodes)
        index.append(np.asarray(block.nodes + (structure.num_nodes,) * pad, np.int32))
        mask.append(np.arange(n_pad) < len(block.nodes))
    stacked = jraph.GraphsTuple(*[None if f[0] is None else np.stack(f) for f in zip(*graphs, strict=True)])
    return BlockStack(graphs=stacked, node_index=np.stack(index), node_mask=np.stack(mask))


# ----------------------------------------------------------------------------------------------------------
# Architecture descriptions: params tree -> [BlockSpec]. Each is the whole per-architecture knowledge.


def _numbered(params: Mapping[str, Any], prefix: str) -> list[str]:
    pat = re.compile(rf"^{prefix}_(\d+)$")
    found = sorted((int(m.group(1)), k) for k in params if (m := pat.match(k)))
    if [i for i, _ in found] != list(range(len(found))):
        raise ValueError(f"expected {prefix}_0..{prefix}_{len(found) - 1} in params, found {[k for _, k in found]}")
    return [k for _, k in found]


def _chain(nodes: Sequence[str], kind: str = FLOW) -> tuple[tuple[str, str, str], ...]:
    return tuple((a, b, kind) for a, b in zip(nodes[:-1], nodes[1:], strict=False))


def _single(name: str, node: str) -> BlockSpec:
    return BlockSpec(name, (node,), reads=(node,), out=node)


def describe_mlp(params: Mapping[str, Any]) -> list[BlockSpec]:
    """MLP: input layer ``dense_0``, hidden layers ``dense_1..`` (one block each), output ``head``."""
    dense = _numbered(params, "dense")
    return [_single("input", dense[0])] + [_single(d, d) for d in dense[1:]] + [_single("output", "head")]


def describe_resnet(params: Mapping[str, Any]) -> list[BlockSpec]:
    """ResNet: stem (conv + BN), one block per basic block (a projection shortcut when present), head."""
    blocks = [BlockSpec("input", ("stem_conv", "stem_bn"), _chain(("stem_conv", "stem_bn")),
                        reads=("stem_conv",), out="stem_bn")]
    for b in _numbered(params, "block"):
        main = tuple(f"{b}/{n}" for n in ("conv1", "bn1", "conv2", "bn2"))
        if "proj_conv" in params[b]:
            proj = (f"{b}/proj_conv", f"{b}/proj_bn")
            blocks.append(BlockSpec(b, main + proj, _chain(main) + _chain(proj, SHORTCUT), reads=main[:1],
                                    skip_reads=proj[:1], out=main[-1], skip_out=proj[-1]))
        else:
            blocks.append(BlockSpec(b, main, _chain(main), reads=main[:1], out=main[-1], skip_out="identity"))
    return blocks + [_single("output", "head")]


def describe_vgg(params: Mapping[str, Any]) -> list[BlockSpec]:
    """VGG: one block per conv layer (conv + BN); the first is G_0; the classifier ``head`` is G_{M+1}."""
    convs = _numbered(params, "conv")
    layers = [BlockSpec(c, (c, f"bn_{i}"), _chain((c, f"bn_{i}")), reads=(c,), out=f"bn_{i}")
              for i, c in enumerate(convs)]
    return [dataclasses.replace(layers[0], name="input")] + layers[1:] + [_single("output", "head")]


def describe_transformer(params: Mapping[str, Any]) -> list[BlockSpec]:
    """Post-LN Transformer encoder (Figure 1b/4): embeddings; per layer Q, K, V, attention output, LN, FFN, LN.

    Residuals: the layer input is read by ``attention_layer_norm`` (x + Attn(x)) and that LayerNorm's output is
    read by ``output_layer_norm`` (x + FFN(x)); both are ``'shortcut'`` edges.
    """
    names = [n for n in ("word_embeddings", "position_embeddings", "token_type_embeddings")
             if n in params["embeddings"]]
    emb = tuple(f"embeddings/{n}" for n in names)
    blocks = [BlockSpec("input", emb + ("embeddings/layer_norm",),
                        tuple((e, "embeddings/layer_norm", FLOW) for e in emb), reads=emb,
                        out="embeddings/layer_norm")]
    for layer in _numbered(params, "layer"):
        q, k, v, o = (f"{layer}/attention/{n}" for n in ("query", "key", "value", "output"))
        ln1, ffn_in, ffn_out, ln2 = (f"{layer}/{n}" for n in
                                     ("attention_layer_norm", "intermediate", "output", "output_layer_norm"))
        edges = ((q, o, FLOW), (k, o, FLOW), (v, o, FLOW)) + _chain((o, ln1, ffn_in, ffn_out, ln2)) + (
            (ln1, ln2, SHORTCUT),)
        blocks.append(BlockSpec(layer, (q, k, v, o, ln1, ffn_in, ffn_out, ln2), edges, reads=(q, k, v),
                                skip_reads=(ln1,), out=ln2))
    head = ("classifier/dense", "classifier/out_proj")
    return blocks + [BlockSpec("output", head, _chain(head), reads=head[:1], out=head[-1])]


ARCHITECTURES: dict[str, Callable[[Mapping[str, Any]], list[BlockSpec]]] = {
    "mlp": describe_mlp,
    "resnet": describe_resnet,
    "vgg": describe_vgg,
    "transformer": describe_transformer,
}


# ----------------------------------------------------------------------------------------------------------


def params_collection(params: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accepts the ``params`` collection or a variables dict holding it."""
    if "params" in params and len(params) <= 2 and set(params) <= {"params", "batch_stats"}:
        return params["params"]
    return params


def _lookup(params: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    node = params
    for part in name.split("/"):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(f"node {name!r} not found in the params tree (missing {part!r})")
        node = node[part]
    return node


def link_blocks(arch: str, specs: Sequence[BlockSpec], params: Mapping[str, Any]) -> GraphStructure:
    """The generic linker: block descriptions + params tree -> ``GraphStructure``.

    Block ``b``'s output sources (its ``out`` node; plus the input's representative for an identity shortcut,
    or ``skip_out`` for a projection) connect to the ``reads`` and ``skip_reads`` of block ``b + 1``.
    """
    names = [n for s in specs for n in s.nodes]
    if len(set(names)) != len(names):
        raise ValueError(f"a node appears in two blocks of the {arch} description")
    node_id = {n: i for i, n in enumerate(names)}
    weight_paths, bias_paths, param_paths = [], [], []
    for n in names:
        leaves = _lookup(params, n)
        path = tuple(n.split("/"))
        weight = next((k for k in WEIGHT_KEYS if k in leaves), None)
        if weight is None:
            raise ValueError(f"node {n!r} has none of the weight leaves {WEIGHT_KEYS}: {sorted(leaves)}")
        weight_paths.append(path + (weight,))
        bias_paths.append(path + ("bias",) if "bias" in leaves else None)
        param_paths.append(tuple(path + (k,) for k in sorted(leaves)))

    edges: list[tuple[int, int, str]] = []
    incoming: list[tuple[str, str]] = []  # (source node, kind) forming the current block's input
    prev_out = None
    for spec in specs:
        edges += [(node_id[a], node_id[b], kind) for a, b, kind in spec.edges]
        for src, kind in incoming:
            edges += [(node_id[src], node_id[r], kind) for r in spec.reads]
            edges += [(node_id[src], node_id[r], SHORTCUT) for r in spec.skip_reads]
        out_sources = [(spec.out, FLOW)]
        if spec.skip_out == "identity":
            if prev_out is None:
                raise ValueError(f"block {spec.name!r} has an identity shortcut but no block before it")
            out_sources.append((prev_out, SHORTCUT))
        elif spec.skip_out is not None:
            out_sources.append((spec.skip_out, SHORTCUT))
        incoming, prev_out = out_sources, spec.out
    if len({(u, v) for u, v, _ in edges}) != len(edges):
        raise ValueError(f"duplicate edges in the {arch} graph")

    blocks = tuple(Block(s.name, tuple(node_id[n] for n in s.nodes)) for s in specs)
    return GraphStructure(arch=arch, node_names=tuple(names), weight_paths=tuple(weight_paths),
                          bias_paths=tuple(bias_paths), param_paths=tuple(param_paths),
                          edges=tuple((u, v) for u, v, _ in edges), edge_kinds=tuple(k for *_, k in edges),
                          blocks=blocks)


def build_graph_structure(arch: str, params: Mapping[str, Any]) -> GraphStructure:
    """Static graph of a target network from its architecture name and flax ``params`` tree (§4.1).

    Args:
      arch: 'mlp', 'resnet', 'vgg' or 'transformer'.
      params: the ``params`` collection (or a variables dict holding it); arrays or ``jax.ShapeDtypeStruct``.

    Example::

        params = jax.eval_shape(ResNet(depth=18).init, key, jnp.zeros((1, 32, 32, 3)))['params']
        structure = build_graph_structure('resnet', params)   # 10 blocks
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    params = params_collection(params)
    return link_blocks(arch, ARCHITECTURES[arch](params), params)
