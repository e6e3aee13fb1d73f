"""Read models and their projector; rebuildable from position 0."""

from .base import ModelBatch, ReadModel
from .projector import ReadModelProjector, default_models
from .tables import metadata

__all__ = ["ModelBatch", "ReadModel", "ReadModelProjector", "default_models", "metadata"]
