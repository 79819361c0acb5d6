"""Which layers of a network are read.

The paper's AlexNet layers, a default for any other network, and ``alias=node`` entries
resolved against the model's graph.
"""

from __future__ import annotations

import difflib

import numpy as np
import torch
from torchvision.models.feature_extraction import get_graph_node_names

from lwroi.exceptions import ConfigError
from lwroi.features.families import model_family, tracer_kwargs

ALEXNET_LAYERS: dict[str, str] = {
    "conv1": "features.2",
    "conv2": "features.5",
    "conv3": "features.7",
    "conv4": "features.9",
    "conv5": "features.12",
    "fc6": "classifier.2",
    "fc7": "classifier.5",
    "fc8": "classifier.6",
}
"""The paper's eight AlexNet layers: conv blocks after their ReLU/max-pool, fc6/fc7 after ReLU, fc8 logits."""

N_DEFAULT_BLOCKS = 8
_NORMS = (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d, torch.nn.LayerNorm, torch.nn.GroupNorm)
_DROPOUTS = (torch.nn.Dropout, torch.nn.Dropout2d)
_CONTAINERS = (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict)


def graph_nodes(model_name: str, model: torch.nn.Module) -> list[str]:
    """Node names of the model's eval-mode graph, input excluded: what ``layers`` entries may name."""
    _, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs(model_name), suppress_diff_warning=True)
    return [n for n in eval_nodes if n != "x"]


def _default_nodes(model: torch.nn.Module, nodes: list[str], family: str) -> dict[str, str]:
    """About eight evenly spaced block outputs plus the final output.

    Torchvision CNNs (family ``cnn``) take the outputs of :func:`_parameter_blocks`. Every other
    family takes its repeated blocks (:func:`_repeated_blocks`: a transformer's encoder layers, a
    ResNet's residual blocks) when it has at least ``N_DEFAULT_BLOCKS`` of them; read on a
    transformer, the parameter rule would spend layers on the patch embedding and the
    patch-merging steps between stages, which only re-project the stage before.
    """
    blocks = _repeated_blocks(model, nodes) if family != "cnn" else []
    chosen = blocks or _parameter_blocks(model, nodes)
    if len(chosen) > N_DEFAULT_BLOCKS:
        chosen = [chosen[i] for i in np.rint(np.linspace(0, len(chosen) - 1, N_DEFAULT_BLOCKS)).astype(int)]
    return {node: node for node in [*chosen, nodes[-1]]}


def _repeated_blocks(model: torch.nn.Module, nodes: list[str]) -> list[str]:
    """Output nodes of the model's repeated block, in graph order; empty when it has none.

    The repeated block is the module class with parameters and sub-modules (plain containers
    aside) that occurs at least ``N_DEFAULT_BLOCKS`` times, the shallowest such class (its
    deepest instance is nearest the root; the most numerous on a tie): ViT's ``EncoderBlock``,
    Swin's ``SwinTransformerBlock``, MaxViT's ``MaxVitLayer``, MViT's ``MultiScaleBlock``, a
    ResNet's ``BasicBlock``. A block's output is the last graph node inside it.
    """
    by_class: dict[type, list[str]] = {}
    for name, module in model.named_modules():
        if (name and type(module) not in _CONTAINERS and any(True for _ in module.children())
                and any(True for _ in module.parameters())):
            by_class.setdefault(type(module), []).append(name)
    candidates = [names for names in by_class.values() if len(names) >= N_DEFAULT_BLOCKS]
    if not candidates:
        return []
    names = min(candidates, key=lambda names: (max(n.count(".") for n in names), -len(names)))
    last = {}
    for i, node in enumerate(nodes[:-1]):
        for name in names:
            if node == name or node.startswith(name + "."):
                last[name] = i
    return [nodes[i] for i in sorted(last.values())]


def _parameter_blocks(model: torch.nn.Module, nodes: list[str]) -> list[str]:
    """Output nodes of the sub-modules with parameters at the shallowest depth that offers enough of them.

    A block is a sub-module with parameters (normalisation layers excluded: they belong
    to the layer before them), taken at the shallowest module depth that offers at least
    ``N_DEFAULT_BLOCKS`` blocks. Its output is read after the parameter-free operations that
    follow it in the same container (ReLU, pooling), dropout aside; on AlexNet this picks
    exactly the paper's layers.
    """
    modules = dict(model.named_modules())
    final = nodes[-1]

    def is_block(name: str) -> bool:
        module = modules.get(name)
        return (
            module is not None
            and not isinstance(module, _NORMS)
            and any(True for _ in module.parameters())
            and final != name
            and not final.startswith(name + ".")
        )

    outputs: dict[str, str] = {}
    for depth in (1, 2, 3, 4):
        outputs, current, parent = {}, None, ""
        for node in nodes[:-1]:
            prefix = ".".join(node.split(".")[:depth])
            if is_block(prefix):
                current, parent = prefix, prefix.rpartition(".")[0]
            elif current != prefix and parent and not node.startswith(parent + "."):
                current = None
            if current is not None and not isinstance(modules.get(node), _DROPOUTS):
                outputs[current] = node
        if len(outputs) >= N_DEFAULT_BLOCKS:
            break
    return list(outputs.values())


def resolve_layers(model_name: str, model: torch.nn.Module, layers: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Map display names to graph nodes of ``model``.

    Parameters
    ----------
    model_name : str
        Name of ``model`` (see :func:`~lwroi.features.families.model_spec`); it sets the
        default rule (by family) and how the graph is traced. ``"alexnet"`` gets the paper's
        layers by default and also accepts their names (``conv1`` ... ``fc8``) as entries.
    model : torch.nn.Module
    layers : sequence of str
        Entries ``"node"`` or ``"alias=node"``; empty selects the default layers.

    Returns
    -------
    layers : dict of str to str
        Display name -> graph node name, in network order of the request.

    Raises
    ------
    ConfigError
        An entry names no node of the graph, or two entries share a display name.
    """
    if model_name == "alexnet" and not layers:
        return dict(ALEXNET_LAYERS)
    nodes = graph_nodes(model_name, model)
    if not layers:
        return _default_nodes(model, nodes, model_family(model_name))
    known = set(nodes)
    resolved: dict[str, str] = {}
    for entry in layers:
        alias, sep, node = entry.partition("=")
        alias, node = alias.strip(), node.strip()
        if not sep:
            node = ALEXNET_LAYERS.get(alias, alias) if model_name == "alexnet" else alias
        if node not in known:
            close = difflib.get_close_matches(node, nodes, n=5, cutoff=0.5) or nodes[:: max(1, len(nodes) // 8)]
            raise ConfigError(
                f"layer {entry!r}: {node!r} is not a node of {model_name}'s graph; "
                f"valid nodes include: {', '.join(close)} "
                f"(all: lwroi layers {model_name} --all)"
            )
        if alias in resolved:
            raise ConfigError(f"layer {entry!r}: display name {alias!r} is given twice")
        resolved[alias] = node
    return resolved


def layer_problems(model_name: str, model: torch.nn.Module, layers: tuple[str, ...]
                   ) -> tuple[dict[str, str] | None, list[str]]:
    """The resolved layers, or None and a line per bad entry (the whole list stops at its first bad entry)."""
    try:
        return resolve_layers(model_name, model, layers), []
    except ConfigError as whole:
        problems = []
        for entry in layers:
            try:
                resolve_layers(model_name, model, [entry])
            except ConfigError as exc:
                problems.append(f"features.layers: {exc}")
        return None, problems or [f"features.layers: {whole}"]  # each entry alone is fine: a repeated name
