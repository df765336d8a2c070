"""The scheduler's view of a target network (§4.1): a static directed graph with blocks, and per-step node features.

``build_graph_structure(arch, params)`` (once, Python) -> ``GraphStructure``;
``node_features(structure, params, grads, lr, loss)`` (jitted) -> ``GraphObservation``;
``describe_graph(structure, out_dir)`` writes ``graph.json`` and ``graph.png``.
"""

from gns_jax.graph.describe import describe_graph, draw_graph, graph_summary
from gns_jax.graph.features import FEATURE_NAMES, NUM_FEATURES, GraphObservation, node_features
from gns_jax.graph.structure import (
    ARCHITECTURES,
    SHORTCUT,
    Block,
    BlockSpec,
    BlockStack,
    GraphStructure,
    build_graph_structure,
    link_blocks,
)

__all__ = [
    "ARCHITECTURES",
    "FEATURE_NAMES",
    "NUM_FEATURES",
    "SHORTCUT",
    "Block",
    "BlockSpec",
    "BlockStack",
    "GraphObservation",
    "GraphStructure",
    "build_graph_structure",
    "describe_graph",
    "draw_graph",
    "graph_summary",
    "link_blocks",
    "node_features",
]
