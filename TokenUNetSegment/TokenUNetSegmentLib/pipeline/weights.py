"""Safe weight loading: safetensors, or ``torch.load(weights_only=True)``; state-dict fit checks."""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from .errors import ModelPackageError, UnsafeWeightsError


def weights_file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a weights file (a named pipe or device, never opened; a folder; nothing
    there), in the words every command uses; None for a file."""
    from .special_files import not_a_file, special_kind

    kind = special_kind(path)
    if kind is not None:
        return f"weights file {path.name} {not_a_file(kind)}"
    if path.is_dir():
        return f"weights file {path} is a folder (give the state dict's file)"
    if not path.is_file():
        return f"weights file not found: {path}"
    return None


def state_dict_from_bytes(data: bytes, name: str) -> dict[str, torch.Tensor]:
    """Tensors from safetensors bytes (``*.safetensors``) or a weights-only torch pickle (``*.pt``/``*.pth``).

    A torch file that would run code on loading (any global beyond plain tensors and containers) is
    refused with :class:`UnsafeWeightsError`; it is never executed.
    """
    suffix = Path(name).suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load as load_safetensors

        try:
            return dict(load_safetensors(data))
        except Exception as error:  # safetensors raises its own error types
            raise ModelPackageError(f"{name} is not a valid safetensors file: {error}") from None
    if suffix in (".pt", ".pth", ".ckpt", ".bin"):
        try:
            loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise UnsafeWeightsError(
                f"refusing to load {name}: it contains code that would run on loading "
                f"({str(error).splitlines()[0][:160]})",
                "ask the provider for a .safetensors file or a plain state dict",
            ) from None
        except Exception as error:
            raise ModelPackageError(f"cannot read {name} as PyTorch weights: {error}") from None
        return _unwrap_state_dict(loaded, name)
    raise UnsafeWeightsError(
        f"unsupported weights format '{suffix or name}'", "use .safetensors, or .pt/.pth holding a state dict"
    )


def _unwrap_state_dict(loaded, name: str) -> dict[str, torch.Tensor]:
    if isinstance(loaded, Mapping):
        for key in ("state_dict", "model", "network", "model_state_dict"):
            if key in loaded and isinstance(loaded[key], Mapping):
                loaded = loaded[key]
                break
        tensors = {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise ModelPackageError(f"{name} holds no state dict (a mapping of parameter names to tensors)")


def check_state_dict_fits(network: nn.Module, state: Mapping[str, torch.Tensor], architecture: str) -> None:
    """Raise :class:`ModelPackageError` naming missing, unexpected and mis-shaped keys, if any."""
    expected = network.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or shapes):
        return

    def listing(keys: list[str]) -> str:
        more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
        return ", ".join(keys[:5]) + more

    parts = []
    if missing:
        parts.append(f"missing keys: {listing(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {listing(unexpected)}")
    if shapes:
        parts.append(f"shape mismatches: {listing(shapes)}")
    raise ModelPackageError(
        f"the weights do not fit the declared architecture '{architecture}'; " + "; ".join(parts),
        "the weights belong to another network or configuration",
    )


def load_weights_into(network: nn.Module, state: Mapping[str, torch.Tensor], architecture: str) -> nn.Module:
    """Check the fit, then load ``state`` into ``network`` strictly."""
    check_state_dict_fits(network, state, architecture)
    network.load_state_dict(dict(state), strict=True)
    return network
