"""What the pipeline needs of a network, as a ``typing.Protocol``: the registry's networks (Token-UNet,
MetaUNETR) satisfy it, and so can any ``torch.nn.Module`` that declares these members."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from .errors import ModelPackageError


@runtime_checkable
class SegmentationNetwork(Protocol):
    """A segmentation network the pipeline can run.

    - ``network(x)`` maps (B, in_channels, X, Y, Z) to logits (B, out_channels, X, Y, Z);
    - ``size_multiple``: every spatial size of ``x`` must be a multiple of it (the downsampling factor);
    - ``has_tokens``: when True, ``network(x, return_attention=True)`` returns ``(logits, maps)`` with
      ``maps["gather"]`` and ``maps["broadcast"]`` of shape (B, tokens, X/m, Y/m, Z/m), m = ``size_multiple``:
      the token grid, on which the pipeline keeps the maps.

    It is also a ``torch.nn.Module`` (``to``, ``eval``, ``parameters``, ``modules``).
    """

    size_multiple: int
    has_tokens: bool

    def __call__(self, x, return_attention: bool = False): ...

    def to(self, *args, **kwargs): ...

    def eval(self): ...


def check_network(network, what: str = "the network") -> SegmentationNetwork:
    """``network`` itself when it satisfies :class:`SegmentationNetwork`.

    Raises:
        ModelPackageError: naming the members it lacks.
    """
    if isinstance(network, SegmentationNetwork):
        return network
    missing = [name for name in ("size_multiple", "has_tokens", "to", "eval") if not hasattr(network, name)]
    missing += [] if callable(network) else ["__call__"]
    raise ModelPackageError(
        f"{what} cannot be run by the pipeline: it lacks {', '.join(missing)}",
        "declare size_multiple and has_tokens on the network (see pipeline.network.SegmentationNetwork)",
    )
