"""Datasets, transforms, label definitions and normalisation presets."""
from rtseg.data.datasets import CamVidDataset, CityscapesDataset, DatasetError, build_dataset, read_image, read_label
from rtseg.data.labels import CAMVID, CITYSCAPES, ClassInfo, colorize, label_ids_to_train_ids, train_ids_to_label_ids
from rtseg.data.normalization import PRESETS, Normalization, get_normalization
from rtseg.data.synthetic import SyntheticScenes, draw_scene

__all__ = [
    "CamVidDataset", "CityscapesDataset", "DatasetError", "build_dataset", "read_image", "read_label",
    "CAMVID", "CITYSCAPES", "ClassInfo", "colorize", "label_ids_to_train_ids", "train_ids_to_label_ids",
    "PRESETS", "Normalization", "get_normalization", "SyntheticScenes", "draw_scene",
]
