"""Module replacement in a model's tree: the one place that swaps a submodule for another.

Boundary: nn.Module bookkeeping only (ModuleDict entries and attributes alike).
"""
from __future__ import annotations

from torch import nn


def set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    """Put `module` at dotted `path` of `root` (a ModuleDict entry or an attribute)."""
    parent_path, _, attr = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    if isinstance(parent, nn.ModuleDict):
        parent[attr] = module
    else:
        setattr(parent, attr, module)


def replace_module(root: nn.Module, old: nn.Module, new: nn.Module) -> str:
    """Put `new` where `old` sits in `root`'s tree (found by identity); returns its dotted path."""
    for name, mod in root.named_modules():
        if mod is old and name:
            set_submodule(root, name, new)
            return name
    raise ValueError("module not found in the model")
