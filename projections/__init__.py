"""Read models and their projector; rebuildable from position 0."""

from .projector import ReadModelProjector
from .tables import metadata

__all__ = ["ReadModelProjector", "metadata"]
