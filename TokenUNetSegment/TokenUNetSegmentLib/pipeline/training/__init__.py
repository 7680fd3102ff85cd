"""Training: ``train(datalist, config, output, Recipe(...))`` and the ``train`` command of the CLI."""

from .trainer import Recipe, train, validate

__all__ = ["Recipe", "train", "validate"]
