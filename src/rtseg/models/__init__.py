"""Model families; importing this package registers every model."""
from rtseg.models import erfnet, espnet, essnet, farseenet, fplnet, liteseg  # noqa: F401
from rtseg.models.base import SegmentationModel

__all__ = ["SegmentationModel"]
