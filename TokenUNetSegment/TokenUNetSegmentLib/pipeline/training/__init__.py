"""Training: ``train(datalist, config, output, Recipe(...))`` and the ``train`` command of the CLI.

``train`` and ``validate`` load on first use, so that declaring the command line imports no torch."""

from .recipe import Recipe

__all__ = ["Recipe", "train", "validate"]


def __getattr__(name: str):
    if name in ("train", "validate"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
