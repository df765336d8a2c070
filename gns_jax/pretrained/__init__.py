"""Trained GNS schedulers shipped with the package: ``gns_jax.pretrained.load(name)`` -> ``TrainedPolicy``.

    tx = gns_jax.scheduled(optax.adam, gns_jax.pretrained.load("fashion_mnist_mlp_proxy"), learning_rate=1e-3)

A shipped scheduler is package data, one directory per name beside this module: ``params.msgpack``, the agent's
parameters (the actor-critic of Eq. 4 over the hierarchical GCN of §4.1, ``flax.serialization.to_bytes``), and
``card.json``, everything needed to rebuild the agent without its task, data or training run — the encoder kind
and sizes, the heads (action scale, σ), the observation options (run-progress feature, mean features, and
whether ``params.msgpack`` holds running feature statistics, ``obs_norm``; cards without it have none), the clip
range [α_min, α_max] of Eq. 4, the K and T it was trained with (``use_with``: the K and T of its deployments when
they differ, which ``load`` then defaults to) and the graph of the target it was trained on —
plus its provenance: the training command, the state-dependence probe of its last update and the accuracy of its
deployments (§4.3). ``export`` writes such a directory from a ``train_agent`` checkpoint, so a new scheduler is one
command: ``python -m gns_jax.pretrained export --workdir=W --name=NAME`` (``docs/pretrained.md``).

**Which targets a scheduler can read.** The state of §4.1 is the target's graph with the same node features for
every node (weight, bias and |gradient| statistics, the learning rate, the loss: ``gns_jax.graph.FEATURE_NAMES``,
plus the run progress for agents trained with it), and the hierarchical GCN's parameters do not depend on the
number of nodes or blocks (one shared encoder per block, mean aggregation: the same parameters run on ResNet-18 and
ResNet-34). So a scheduler reads any target whose graph can be built. What is checked, before anything runs
(``check_target``; the error is ``IncompatibleTargetError``, one line saying why):

* the graph can be built: the parameter names follow one of the architecture descriptions of
  ``gns_jax.graph.structure`` (an MLP's layers are ``dense_0, dense_1, ..., head``); a tree with other names has no
  graph the scheduler can read (a flax model with default names ``Dense_0, ...`` must name its layers);
* the node features are those the encoder was trained on: the card's observation options give the feature width,
  which must match the input width of the stored encoder (a card and parameters that do not belong together);
* for the CSS encoder (Table 4), whose input is all node features concatenated, the node count is the trained one;
* the architecture is the one the agent was trained on. A graph of another architecture (an MLP-trained agent on
  a ResNet or a Transformer) is readable — the paper transfers a ResNet-34 agent to VGG-16 (Table 3) — but holds
  node kinds (convolutions, normalization layers, embeddings) the agent has never seen, so it is refused unless
  ``allow_other_architectures=True``.

``load(name)`` builds the policy for the graph of the target the scheduler was trained on; an MLP of the same
depth and any widths has the same graph. For another graph, ``load(name, target=params)`` checks and builds it for
that one. The policy's observation re-checks the parameters it is handed inside ``gns_jax.scheduled`` (at trace
time, no cost per step): parameters whose graph differs from the one the policy was built for raise the same
one-line error instead of being read through the wrong graph.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from gns_jax.agent import Agent
from gns_jax.checkpoints import load_agent_params
from gns_jax.config import config_to_dict
from gns_jax.gcn import make_encoder
from gns_jax.graph import (
    FEATURE_NAMES,
    NUM_FEATURES,
    GraphObservation,
    GraphStructure,
    build_graph_structure,
    node_features,
)
from gns_jax.graph.structure import ARCHITECTURES, params_collection
from gns_jax.policy import ActorCritic
from gns_jax.scheduled import TrainedPolicy
from gns_jax.settings import agent_settings
from gns_jax.targets.build import build_task

PyTree = Any
CARD = "card.json"
PARAMS = "params.msgpack"
FORMAT = 1
MEAN_FEATURES = (FEATURE_NAMES.index("weight_mean"), FEATURE_NAMES.index("bias_mean"))
# How each architecture description names the layers it reads (gns_jax.graph.structure), for the refusal.
NAMING = {
    "mlp": "dense_0, dense_1, ..., head",
    "resnet": "stem_conv, stem_bn, block_0, ..., head",
    "vgg": "conv_0, bn_0, conv_1, bn_1, ..., head",
    "transformer": "embeddings, layer_0, ..., classifier",
}


class UnknownSchedulerError(KeyError):
    """No shipped scheduler (and no exported directory) of that name."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0])


class IncompatibleTargetError(ValueError):
    """A target graph the scheduler cannot read (or was not trained for); the message says why, on one line."""


# ---- reading ----------------------------------------------------------------------------------------------------


def _package_dir():
    return importlib.resources.files(__name__)


def available() -> tuple[str, ...]:
    """Names of the schedulers shipped in the package (directories with a ``card.json``), sorted."""
    return tuple(sorted(entry.name for entry in _package_dir().iterdir()
                        if entry.is_dir() and entry.joinpath(CARD).is_file()))


def _directory(name: str):
    """The directory of a shipped scheduler, or an exported directory given by its path."""
    if name in available():
        return _package_dir().joinpath(name)
    if os.path.isfile(os.path.join(name, CARD)):
        return pathlib.Path(name)
    raise UnknownSchedulerError(f"no pretrained scheduler {name!r}; available: {', '.join(available()) or 'none'} "
                                "(or the path of a directory written by gns_jax.pretrained.export)")


def card(name: str) -> dict:
    """The card of a scheduler (a shipped name or an exported directory): settings, trained target, provenance."""
    return json.loads(_directory(name).joinpath(CARD).read_text(encoding="utf-8"))


def _feature_width(agent: Mapping) -> int:
    return NUM_FEATURES + int(bool(agent["progress_feature"]))


def observation_fn(structure: GraphStructure, progress_feature: bool, mean_features: bool):
    """``(params, grads, lr, mean_loss, progress) -> GraphObservation``: the state of §4.1 with the agent's options.

    The node features of ``gns_jax.graph.node_features``; ``mean_features=False`` zeroes the weight and bias mean
    columns, ``progress_feature`` appends t / (N - 1) as a ninth global feature (``Agent.observe``'s options).
    """

    def observe(params, grads, lr, loss, progress=0.0):
        obs = node_features(structure, params, grads, lr, loss)
        nodes = obs.nodes
        if not mean_features:
            nodes = nodes.at[:, list(MEAN_FEATURES)].set(0.0)
        if progress_feature:
            column = jnp.broadcast_to(jnp.asarray(progress, nodes.dtype), (nodes.shape[0], 1))
            nodes = jnp.concatenate([nodes, column], axis=1)
        return obs.replace(nodes=nodes)

    return observe


def build_network(agent: Mapping, structure: GraphStructure):
    """The actor-critic of Eq. 4 over the card's encoder, for one target graph (``Agent``'s network)."""

    encoder = make_encoder(agent["encoder"], structure, hidden=int(agent["encoder_hidden"]),
                           layers=int(agent["encoder_layers"]))
    return ActorCritic(encoder=encoder, action_scale=float(agent["action_scale"]), sigma=float(agent["sigma"]),
                       hidden=int(agent["head_hidden"]), obs_norm=bool(agent.get("obs_norm", False)))


def _skeleton(shapes: Mapping[str, list[int]]) -> dict:
    """The trained target's parameter tree (shapes only) from the card's ``{"a/b/kernel": shape}``."""
    tree: dict = {}
    for path, shape in shapes.items():
        node = tree
        *parents, leaf = path.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = jax.ShapeDtypeStruct(tuple(shape), jnp.float32)
    return tree


def _flat_shapes(params: PyTree) -> dict[str, list[int]]:
    flat = jax.tree_util.tree_flatten_with_path(params_collection(params))[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): [int(d) for d in np.shape(leaf)]
            for path, leaf in flat}


def node_kinds(structure: GraphStructure, params: PyTree) -> list[str]:
    """The kinds of layer the graph's nodes are (dense, conv, norm, embedding), from their weight leaves."""
    tree, kinds = params_collection(params), set()
    for path in structure.weight_paths:
        leaf = tree
        for key in path:
            leaf = leaf[key]
        name = path[-1]
        kinds.add({"scale": "norm", "embedding": "embedding"}.get(name, "dense" if len(np.shape(leaf)) <= 2
                                                                   else "conv"))
    return sorted(kinds)


def _describe(structure: GraphStructure) -> str:
    names = structure.node_names
    shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
    return f"{structure.arch} graph of {structure.num_nodes} nodes in {structure.num_blocks} blocks ({shown})"


def _why_not(error: Exception) -> str:
    """A description's failure as a short reason ('' when it says nothing beyond "no such layer")."""
    if isinstance(error, IndexError):  # a description found none of its numbered layers
        return ""
    return " ".join(str(error).strip("'\"").split())


def _readable_as(params: PyTree) -> dict[str, GraphStructure | str]:
    """Every architecture description applied to ``params``: its structure, or why it cannot read them."""
    out = {}
    for arch in ARCHITECTURES:
        try:
            out[arch] = build_graph_structure(arch, params)
        except (KeyError, ValueError, IndexError, TypeError, AttributeError) as e:
            out[arch] = _why_not(e)
    return out


def check_target(scheduler: str | Mapping, target: PyTree, *, allow_other_architectures: bool = False
                 ) -> GraphStructure:
    """The graph of ``target`` (a params tree, arrays or ``jax.ShapeDtypeStruct``) if the scheduler can read it.

    ``scheduler`` is a name (or exported directory) or a card. Raises ``IncompatibleTargetError`` with one line
    saying why otherwise (see the module docstring for what is checked and why).
    """
    info = card(scheduler) if isinstance(scheduler, str) else scheduler
    name = info.get("name", "?")
    trained = info["trained_on"]
    arch, agent = trained["architecture"], info["agent"]
    readable = _readable_as(target)
    structures = {a: s for a, s in readable.items() if isinstance(s, GraphStructure)}
    if arch in structures:
        structure = structures[arch]
    elif structures:
        structure = next(iter(structures.values()))
        if not allow_other_architectures:
            seen = ", ".join(trained.get("node_kinds", [])) or "?"
            kinds = ", ".join(node_kinds(structure, target))
            raise IncompatibleTargetError(
                f"pretrained scheduler {name!r} was trained on {arch} graphs ({seen} nodes) and this target is a "
                f"{_describe(structure)} with {kinds} nodes: its GCN would run on it, but on node kinds it has "
                "never seen; pass allow_other_architectures=True to try it anyway (the paper transfers between "
                "CNNs, Table 3)")
    else:
        tree = params_collection(target)
        top = ", ".join(sorted(map(str, tree))) if isinstance(tree, Mapping) else type(target).__name__
        reason = f": {readable[arch]}" if readable[arch] else ""
        raise IncompatibleTargetError(
            f"pretrained scheduler {name!r} cannot read this target: its parameters form no graph of §4.1"
            f"{reason}; it reads {arch} layers named {NAMING.get(arch, '?')} and this tree has {top}")
    if agent["encoder"] == "css" and structure.num_nodes != trained["num_nodes"]:
        raise IncompatibleTargetError(
            f"pretrained scheduler {name!r} has a CSS encoder, whose input is all node features concatenated "
            f"({trained['num_nodes']} nodes x {_feature_width(agent)} features); this target's graph has "
            f"{structure.num_nodes} nodes")
    return structure


def _read_params(directory, info: Mapping, network, structure: GraphStructure) -> PyTree:
    """The stored parameters, checked against the card: hash, tree, shapes (the encoder's input width)."""
    data = directory.joinpath(PARAMS).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if info.get("params_sha256") not in (None, digest):
        raise IncompatibleTargetError(f"{PARAMS} of {info.get('name')!r} does not match its card (SHA-256 "
                                      f"{digest[:12]}..., card {info['params_sha256'][:12]}...)")
    width = _feature_width(info["agent"])
    example = jax.ShapeDtypeStruct((structure.num_nodes, width), jnp.float32)
    like = jax.eval_shape(network.init, jax.random.key(0), GraphObservation(nodes=example))
    raw = serialization.msgpack_restore(data)
    try:
        params = serialization.from_state_dict(like, raw)
    except (ValueError, KeyError) as e:
        raise IncompatibleTargetError(f"{PARAMS} of {info.get('name')!r} does not fit the network its card "
                                      f"describes: {' '.join(str(e).split())}") from e
    for (path, want), got in zip(jax.tree_util.tree_flatten_with_path(like)[0], jax.tree.leaves(params),
                                 strict=True):
        if tuple(np.shape(got)) != tuple(want.shape):
            where = "/".join(str(getattr(k, "key", k)) for k in path)
            raise IncompatibleTargetError(
                f"{PARAMS} of {info.get('name')!r}: {where} has shape {tuple(np.shape(got))}, the card's settings "
                f"({width} node features, encoder {info['agent']['encoder']} {info['agent']['encoder_hidden']} "
                f"wide) need {tuple(want.shape)}")
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)


def load(name: str, target: PyTree | None = None, *, allow_other_architectures: bool = False) -> TrainedPolicy:
    """A shipped (or exported) scheduler as the ``TrainedPolicy`` that ``gns_jax.scheduled`` takes.

    Args:
      name: one of ``available()``, or the path of a directory written by ``export``.
      target: the parameters (or their shapes) of the network to schedule, when its graph differs from the one the
        scheduler was trained on (e.g. an MLP of another depth); ``None`` builds the policy for the trained graph.
      allow_other_architectures: read a graph of another architecture than the trained one (module docstring).

    Raises:
      UnknownSchedulerError: no such name (the message lists the available ones).
      IncompatibleTargetError: a target it cannot read, with the reason on one line.
    """
    directory = _directory(name)
    info = card(name)
    if info.get("format") != FORMAT:
        raise IncompatibleTargetError(f"card of {name!r} has format {info.get('format')!r}; this gns_jax reads "
                                      f"format {FORMAT}")
    trained = info["trained_on"]
    if target is None:
        structure = build_graph_structure(trained["architecture"], _skeleton(trained["target_params"]))
    else:
        structure = check_target(info, target, allow_other_architectures=allow_other_architectures)
    agent = info["agent"]
    network = build_network(agent, structure)
    params = _read_params(directory, info, network, structure)
    observe = observation_fn(structure, bool(agent["progress_feature"]), bool(agent["mean_features"]))
    label = info.get("name", name)

    def checked_observe(target_params, grads, lr, loss, progress=0.0):
        try:
            got = build_graph_structure(structure.arch, target_params)
        except (KeyError, ValueError, IndexError, TypeError, AttributeError) as e:
            got = _why_not(e) or f"no {NAMING.get(structure.arch, 'layers')}"
        if got != structure:
            what = _describe(got) if isinstance(got, GraphStructure) else f"not a {structure.arch} graph ({got})"
            raise IncompatibleTargetError(
                f"pretrained scheduler {label!r} was loaded for a {_describe(structure)}; the parameters it is "
                f"given form {what}: load it for them with gns_jax.pretrained.load({label!r}, target=params)")
        return observe(target_params, grads, lr, loss, progress)

    use = info.get("use_with") or trained  # K and T of its recorded deployments when they differ from training's
    k = int(use["decision_interval"])
    return TrainedPolicy(network=network, params=params, observe=checked_observe, decision_interval=k,
                         num_decisions=int(use["steps"]) // k, lr_min=float(agent["lr_min"]),
                         lr_max=float(agent["lr_max"]))


# ---- writing ----------------------------------------------------------------------------------------------------

# Fields of config.agent that rebuild the network and its observation (the rest is how it was trained: provenance).
AGENT_FIELDS = ("encoder", "encoder_hidden", "encoder_layers", "head_hidden", "action_scale", "sigma", "lr_min",
                "lr_max", "progress_feature", "mean_features", "obs_norm")


def default_directory(name: str) -> str:
    """Where ``export`` writes a scheduler that ships with the package: beside this module."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), name)


def _recorded_path(path: str) -> str:
    """A path as a card records it: relative to the working directory (the repository, for the shipped cards) when
    it lies below it, so that the card names a path that exists in a clone; absolute otherwise."""
    path = os.path.abspath(path)
    cwd = os.getcwd()
    return os.path.relpath(path, cwd) if os.path.commonpath([path, cwd]) == cwd else path


def export(config, checkpoint: str, name: str, *, out_dir: str | None = None, task=None,
           provenance: Mapping[str, Any] | None = None, description: str = "", overwrite: bool = False,
           use_with: tuple[int, int] | None = None) -> str:
    """Turn a ``train_agent`` checkpoint into a scheduler directory (``params.msgpack`` + ``card.json``).

    Args:
      config: the ConfigDict the agent was trained with (a run's ``config.json`` read back, or a config file).
      checkpoint: the checkpoint directory of the run, or one step of it (``.../checkpoints/10``).
      name: the scheduler's name (``[a-z0-9_]+``); ``load(name)`` finds it once it is in the package.
      out_dir: where to write (default: ``gns_jax/pretrained/<name>``, i.e. shipped with the package).
      task: the task of ``config`` (default ``build_task(config)``; only its architecture is read).
      provenance: what the card records about how the agent came about (command, probe, deployments, notes).
      description: one paragraph for the card.
      overwrite: replace an existing directory of that name.
      use_with: ``(T, K)`` for a scheduler deployed at another run length than it was trained at (an agent trained
        on a short proxy and deployed with as many decisions on the full run): ``load`` then defaults to this K and
        T, while ``trained_on`` keeps the training's.

    Returns:
      The directory written. The export is read back with ``load`` before returning.
    """
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise ValueError(f"scheduler name {name!r}: use lower-case letters, digits and '_'")
    out_dir = out_dir or default_directory(name)
    if os.path.exists(os.path.join(out_dir, CARD)) and not overwrite:
        raise FileExistsError(f"{out_dir} holds a scheduler already; pass overwrite=True (--overwrite) to replace it")
    agent = Agent(task or build_task(config), agent_settings(config))
    params = load_agent_params(checkpoint, jax.eval_shape(agent.init_params, jax.random.key(0)))  # shapes only
    params = jax.tree.map(lambda x: np.asarray(x, np.float32), jax.device_get(params))
    if not all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params)):
        raise ValueError(f"agent checkpoint {checkpoint} holds non-finite parameters; export an earlier one")
    abstract = jax.eval_shape(agent.task.init_state, jax.random.key(0), 1e-3).params
    structure = agent.structure
    a = config.agent
    k, steps = int(config.decision_interval), int(config.steps)
    data = serialization.to_bytes(params)
    info = {
        "format": FORMAT,
        "name": name,
        "description": description,
        "agent": {field: a[field] for field in AGENT_FIELDS if field in a} | {"node_features": NUM_FEATURES + int(
            bool(a.progress_feature))},
        "trained_on": {
            "architecture": structure.arch,
            "model": config_to_dict(config.model),
            "data": config.data.name,
            "optimizer": config.optimizer.name,
            "batch_size": int(config.batch_size),
            "steps": steps,
            "decision_interval": k,
            "num_decisions": steps // k,
            "num_nodes": structure.num_nodes,
            "num_blocks": structure.num_blocks,
            "node_names": list(structure.node_names),
            "node_kinds": node_kinds(structure, abstract),
            "target_params": _flat_shapes(abstract),
        },
        **({"use_with": {"steps": int(use_with[0]), "decision_interval": int(use_with[1]),
                         "num_decisions": int(use_with[0]) // int(use_with[1])}} if use_with else {}),
        "params_sha256": hashlib.sha256(data).hexdigest(),
        "params_count": int(sum(np.size(x) for x in jax.tree.leaves(params))),
        "provenance": dict(provenance or {}, checkpoint=_recorded_path(checkpoint),
                           config=config_to_dict(config)),
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, PARAMS), "wb") as f:
        f.write(data)
    with open(os.path.join(out_dir, CARD), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=1, allow_nan=False)
        f.write("\n")
    loaded = load(out_dir)  # the export reads back into the same parameters
    for x, y in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(params), strict=True):
        if not np.array_equal(np.asarray(x), y):
            raise RuntimeError(f"the scheduler written to {out_dir} does not read back to the checkpoint's agent")
    return out_dir


__all__ = [
    "IncompatibleTargetError",
    "UnknownSchedulerError",
    "available",
    "build_network",
    "card",
    "check_target",
    "export",
    "load",
    "node_kinds",
    "observation_fn",
]
