"""Inspecting a target graph: ``graph.json`` (counts, blocks, edges) and ``graph.png`` (the block drawing)."""

from __future__ import annotations

import json
import os
from typing import Any

from gns_jax.graph.structure import SHORTCUT, GraphStructure


def graph_summary(structure: GraphStructure) -> dict[str, Any]:
    """The JSON-ready description: counts, per-block node names (parameter paths) and typed edges."""
    names = structure.node_names
    return {
        "arch": structure.arch,
        "num_nodes": structure.num_nodes,
        "num_edges": structure.num_edges,
        "num_blocks": structure.num_blocks,
        "num_shortcut_edges": sum(k == SHORTCUT for k in structure.edge_kinds),
        "blocks": [{"name": b.name, "nodes": [names[v] for v in b.nodes]} for b in structure.blocks],
        "edges": [{"src": names[u], "dst": names[v], "kind": k}
                  for (u, v), k in zip(structure.edges, structure.edge_kinds, strict=True)],
    }


def _layout(structure: GraphStructure, graph) -> dict[int, tuple[float, float]]:
    """Blocks left to right; inside a block, rows are topological generations of its intra-block edges."""
    import networkx as nx

    pos = {}
    for b, block in enumerate(structure.blocks):
        sub = graph.subgraph(block.nodes)
        for depth, generation in enumerate(nx.topological_generations(sub)):
            generation = sorted(generation)
            for j, v in enumerate(generation):
                pos[v] = (b + 0.8 * ((j + 0.5) / len(generation) - 0.5), -depth)
    return pos


def draw_graph(structure: GraphStructure, path: str) -> None:
    """PNG drawing of the graph: one column per block, shortcut edges dashed and curved."""
    import matplotlib as mpl
    import networkx as nx
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend (e.g. a notebook's) alone

    graph = nx.DiGraph()
    graph.add_nodes_from(range(structure.num_nodes))
    graph.add_edges_from(structure.edges)
    pos = _layout(structure, graph)
    depth = 1 - min(y for _, y in pos.values())
    fig = Figure(figsize=(max(6.0, 0.75 * structure.num_blocks + 1), max(3.0, 0.8 * depth + 1.5)))
    ax = fig.add_subplot()
    block_of = {v: b for b, block in enumerate(structure.blocks) for v in block.nodes}
    colors = [mpl.colormaps['tab10'](block_of[v] % 10) for v in graph.nodes]
    nx.draw_networkx_nodes(graph, pos, node_color=colors, node_size=120, ax=ax)
    flow = [e for e, k in zip(structure.edges, structure.edge_kinds, strict=True) if k != SHORTCUT]
    skip = [e for e, k in zip(structure.edges, structure.edge_kinds, strict=True) if k == SHORTCUT]
    nx.draw_networkx_edges(graph, pos, edgelist=flow, arrowsize=6, width=0.6, node_size=120, ax=ax)
    nx.draw_networkx_edges(graph, pos, edgelist=skip, arrowsize=6, width=0.6, style="dashed", edge_color="tab:red",
                           connectionstyle="arc3,rad=0.25", node_size=120, ax=ax)
    if structure.num_nodes <= 60:
        labels = {v: structure.node_names[v].split("/")[-1].removesuffix("_embeddings") for v in graph.nodes}
        nx.draw_networkx_labels(graph, pos, labels, font_size=5, ax=ax)
    for b, block in enumerate(structure.blocks):
        ax.text(b, -depth + 0.3, block.name, ha="center", va="top", fontsize=6, rotation=45)
    ax.set_title(f"{structure.arch}: {structure.num_nodes} nodes, {structure.num_edges} edges "
                 f"({len(skip)} shortcut, dashed), {structure.num_blocks} blocks", fontsize=8)
    ax.set_ylim(-depth - 0.2, 0.5)  # keeps the block labels inside the axes when the graph is a single row
    ax.axis("off")
    fig.savefig(path, dpi=150, bbox_inches="tight")


def describe_graph(structure: GraphStructure, out_dir: str) -> dict[str, Any]:
    """Writes ``out_dir/graph.json`` (``graph_summary``) and ``out_dir/graph.png``; returns the summary."""
    os.makedirs(out_dir, exist_ok=True)
    summary = graph_summary(structure)
    with open(os.path.join(out_dir, "graph.json"), "w") as f:
        json.dump(summary, f, indent=1)
    draw_graph(structure, os.path.join(out_dir, "graph.png"))
    return summary
