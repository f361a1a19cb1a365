"""Weight files and checkpoints: atomic writes, safe loads (``weights_only=True``, safetensors), clear mismatch
errors. This package builds no model and imports neither the registry nor the models (they import it); the
model factory for checkpoints is :func:`rtseg.registry.model_from_checkpoint`."""
from rtseg.io.checkpoint import CHECKPOINT_FORMAT, is_checkpoint, load_checkpoint, save_checkpoint, stored_card
from rtseg.io.files import CheckpointError, WeightsMismatchError, atomic_save, atomic_write, load_file
from rtseg.io.weights import CARD_METADATA_KEY, extract_state_dict, is_safetensors, load_weights, read_card, read_weights, save_weights

__all__ = [
    "CHECKPOINT_FORMAT", "CARD_METADATA_KEY", "CheckpointError", "WeightsMismatchError",
    "atomic_save", "atomic_write", "load_file", "is_checkpoint", "save_checkpoint", "load_checkpoint", "stored_card",
    "extract_state_dict", "load_weights", "is_safetensors", "save_weights", "read_weights", "read_card",
]
