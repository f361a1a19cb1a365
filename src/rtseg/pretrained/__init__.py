"""Named pretrained weights: ``rtseg.create_model("espnet", weights="camvid-official")``.

One table keyed by (model name, tag), like torchvision's weight enums and timm's pretrained tags. An entry
names its file, either a URL (downloaded once with ``torch.hub`` into rtseg's cache folder, checked by
SHA-256) or a safetensors file shipped in this package folder, and carries the file's SHA-256 and its
model card (licence and source included). Any local file whose SHA-256 matches an entry gets that entry's
card, whatever its name or folder.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from rtseg.card import Metrics, ModelCard, TrainingRecord
from rtseg.io import CheckpointError, read_card, read_weights
from rtseg.io.weights import LegacyCard
from rtseg.data.labels import CAMVID, CITYSCAPES
from rtseg.data.normalization import PRESETS
from rtseg.hub import cache_dir, download, is_url, sha256_of
from rtseg.errors import UserError
from rtseg.storage import not_a_file

__all__ = [
    "default_tag",
    "PretrainedWeights",
    "UnknownWeightsError",
    "register_pretrained",
    "list_pretrained",
    "get_pretrained",
    "find_pretrained",
    "identify_weights",
    "pretrained_table",
    "locate_weights",
    "resolve_weights",
]

PACKAGE_DIR = Path(__file__).resolve().parent


class UnknownWeightsError(UserError, ValueError):
    """A ``weights=`` value that is neither a registered tag, a URL nor an existing file."""


@dataclass(frozen=True)
class PretrainedWeights:
    """One named weights file: where it lives, its SHA-256 and its card."""

    model: str
    tag: str
    sha256: str
    card: ModelCard
    url: str | None = None  # downloaded into the cache
    file: str | None = None  # or shipped in rtseg/pretrained/ (package data)
    # accuracy of each deployment path (rtseg.deploy.paths) measured against fp32 eager on the card's dataset:
    # path -> {"miou_change", "goal", "pass", "measured"}; what `rtseg select` trusts without --verify
    deployment: Mapping[str, Any] | None = None
    default: bool = False  # the tag ``weights="default"`` means for this model (see :func:`default_tag`)

    def __post_init__(self):
        if (self.url is None) == (self.file is None):
            raise ValueError(f"pretrained {self.model}/{self.tag}: give exactly one of url and file")
        if self.card.model != self.model:
            raise ValueError(f"pretrained {self.model}/{self.tag}: its card describes model {self.card.model!r}")

    @property
    def license(self) -> str:
        return self.card.license or "unknown"

    @property
    def source(self) -> str:
        return self.card.source or ""

    def path(self, progress: bool = True) -> Path:
        """The local file: the shipped one, or the cached download (fetched first if needed); checked by SHA-256."""
        if self.file is not None:
            path = PACKAGE_DIR / self.file
            digest = sha256_of(path)
            if digest != self.sha256:
                raise ValueError(f"shipped weights {path} have SHA-256 {digest}, the table expects {self.sha256}; reinstall rtseg")
            return path
        return download(self.url, sha256=self.sha256, filename=self._cache_name(), progress=progress)

    def cached(self) -> bool:
        """Whether the file is here without a download: shipped, or already in the cache."""
        if self.file is not None:
            return True
        return (cache_dir() / self._cache_name()).is_file()

    def _cache_name(self) -> str:
        # named by model and tag: two releases may share a file name (ESPNet's encoder and decoder both ship espnet_p_2_q_8.pth)
        return f"{self.model}_{self.tag}-{self.sha256[:8]}{Path(self.url or '').suffix or '.pth'}"

    @classmethod
    def shipped(cls, file: str, tag: str, sha256: str, deployment: Mapping[str, Any] | None = None, default: bool = False) -> "PretrainedWeights":
        """An entry for a safetensors file written by :func:`rtseg.export_weights` and shipped in this folder
        (``file`` relative to it); its card is the one inside the file."""
        _, card = read_weights(PACKAGE_DIR / file, tensors=False)
        if card is None:
            raise ValueError(f"{PACKAGE_DIR / file} holds no model card; write it with rtseg.export_weights")
        return cls(card.model, tag, sha256, card, file=file, deployment=deployment, default=default)


_TABLE: dict[tuple[str, str], PretrainedWeights] = {}


def register_pretrained(entry: PretrainedWeights) -> PretrainedWeights:
    key = (entry.model, entry.tag)
    if key in _TABLE:
        raise ValueError(f"pretrained weights {entry.model}/{entry.tag} are registered twice")
    _TABLE[key] = entry
    return entry


def list_pretrained(model: str | None = None) -> list[PretrainedWeights]:
    """Registered weights, sorted by model and tag (only ``model``'s when given)."""
    return [e for k, e in sorted(_TABLE.items()) if model is None or e.model == model]


def default_tag(model: str) -> str | None:
    """The tag ``weights="default"`` names for ``model``: the entry marked default (the zoo's best weights for it),
    else its only or first registered tag; None without registered weights."""
    entries = list_pretrained(model)
    if not entries:
        return None
    marked = [e for e in entries if e.default]
    return (marked or entries)[0].tag


def get_pretrained(model: str, tag: str) -> PretrainedWeights:
    if tag == "default" and default_tag(model) is not None:
        tag = default_tag(model)
    try:
        return _TABLE[(model, tag)]
    except KeyError:
        tags = [e.tag for e in list_pretrained(model)]
        raise UnknownWeightsError(
            f"no pretrained weights {tag!r} for model {model!r}; "
            + (f"its tags: {', '.join(tags)}" if tags else "it has no registered weights") + " (rtseg models --pretrained lists all)"
        ) from None


def find_pretrained(sha256: str) -> PretrainedWeights | None:
    """The registered entry whose file has this SHA-256, if any."""
    return next((e for e in _TABLE.values() if e.sha256 == sha256.lower()), None)


def identify_weights(path: str | os.PathLike, *, legacy_card: LegacyCard | None = None) -> ModelCard | None:
    """The card of a weights file: the registered entry's when its SHA-256 matches one, else the one stored in it
    (for a checkpoint written before model cards, the one ``legacy_card`` derives: :func:`rtseg.registry.checkpoint_card`)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {str(path)!r} {not_a_file(path) or 'does not exist'}")
    entry = find_pretrained(sha256_of(path))
    return entry.card if entry is not None else read_card(path, legacy_card=legacy_card)


def _weights_file(path: Path) -> None:
    """Raise unless ``path`` reads as a weights file (before a download may enter the cache)."""
    read_weights(path, tensors=False)


def locate_weights(model: str, weights: str | os.PathLike, progress: bool = True) -> tuple[Path, PretrainedWeights | None]:
    """The local file a ``weights=`` value names (a tag's file or a URL downloaded first) and the registered entry
    it is, by tag, URL or SHA-256 (None for a file nobody registered)."""
    text = str(weights)
    if text == "default" and default_tag(model) is not None:
        text = default_tag(model)
    entry = _TABLE.get((model, text))
    if entry is None and is_url(text):
        entry = next((e for e in _TABLE.values() if e.url == text), None)
        path = entry.path(progress) if entry else download(text, progress=progress, validate=_weights_file)
    elif entry is not None:
        path = entry.path(progress)
    else:
        path = Path(text).expanduser()
        if path.exists() and not path.is_file():
            raise CheckpointError(f"weights {text!r} {not_a_file(path)}")
        if not path.is_file():
            tags = [e.tag for e in list_pretrained(model)]
            raise UnknownWeightsError(
                f"weights {text!r} for model {model!r} are not a registered tag "
                f"({'tags: ' + ', '.join(tags) if tags else 'it has none'}), a URL (http://, https://, file://) or an existing file"
            )
    return path, entry or find_pretrained(sha256_of(path))


def resolve_weights(model: str, weights: str | os.PathLike, progress: bool = True, *,
                    legacy_card: LegacyCard | None = None) -> tuple[dict[str, torch.Tensor], ModelCard | None, str]:
    """``(state dict, card or None, description)`` for a ``weights=`` value: a registered tag of ``model``, a URL
    (http, https, file) or a local file (any format :func:`rtseg.io.read_weights` reads).

    A file whose SHA-256 matches a registered entry gets that entry's card; otherwise the card stored in the
    file (safetensors metadata, rtseg checkpoint; ``legacy_card`` derives one written before cards), or None for a
    bare state dict.
    """
    path, entry = locate_weights(model, weights, progress)
    state, card = read_weights(path, legacy_card=legacy_card)
    if entry is not None:
        return state, entry.card, f"{entry.model}/{entry.tag} ({path})"
    return state, card, str(path)


def _metric_text(card: ModelCard) -> str:
    if not card.metrics:
        return "-"
    m = card.metrics[0]
    return f"{m.dataset} {m.split} mIoU {m.miou:.3f}" + (f" ({m.note})" if m.note else "")


def pretrained_table(entries: list[PretrainedWeights] | None = None) -> str:
    """A markdown table of registered weights (all, or ``entries``): model, tag, dataset, classes, metric, source, licence."""
    rows = ["| model | weights | trained on | classes | metric | source | licence |", "|---|---|---|---|---|---|---|"]
    for e in list_pretrained() if entries is None else entries:
        c = e.card
        classes = f"{c.class_info.num_classes}" + (f" + {len(c.void_outputs)} void" if c.void_outputs else "")
        trained = c.training.dataset if c.training else "-"
        tag = f"{e.tag} (default)" if default_tag(e.model) == e.tag and len(list_pretrained(e.model)) > 1 else e.tag
        rows.append(f"| {e.model} | {tag} | {trained} | {classes} | {_metric_text(c)} | {e.source} | {e.license} |")
    return "\n".join(rows)


# -- the table ------------------------------------------------------------------------------------
# The official ESPNet release (Mehta et al., ECCV 2018; MIT licence), pretrained/ folder of its repository.
_ESPNET_REPO = "https://github.com/sacmehta/ESPNet"
_ESPNET_FILES = f"{_ESPNET_REPO}/raw/master/pretrained"
_ESPNET_BY = "the ESPNet authors (official release)"


def _espnet_card(model: str, num_outputs: int, classes, dataset: str, normalization: str, options: Mapping[str, Any],
                 metrics: tuple[Metrics, ...] = (), notes: str = "") -> ModelCard:
    return ModelCard(
        model=model, num_outputs=num_outputs, normalization=PRESETS[normalization], size_divisor=8, options=dict(options),
        classes=classes, training=TrainingRecord(dataset=dataset, by=_ESPNET_BY, split=None),
        metrics=metrics, license="MIT", source=f"official ESPNet release ({_ESPNET_REPO})", notes=notes,
    )


def _measured(dataset: str, miou: float, accuracy: float, images: int, size, per_class: dict, command: str, note: str = "") -> Metrics:
    from rtseg.evaluation import EvalProtocol, protocol_record

    return Metrics(dataset=dataset, split="val", miou=miou, pixel_accuracy=accuracy, images=images, per_class_iou=per_class,
                   protocol={**protocol_record(EvalProtocol(), size), "command": command},
                   measured_with="rtseg 0.1.0, torch 2.13.0 (CPU), 2-core AMD EPYC", note=note)


# Measured with the command in each record (docs/evaluation.md gives the conditions and the comparison with the official figures).
_CAMVID_VAL = _measured(
    "camvid", 0.7010, 0.9268, 101, (360, 480),
    {"sky": 0.9465, "building": 0.8449, "pole": 0.1207, "road": 0.9681, "pavement": 0.8684, "tree": 0.9070, "sign-symbol": 0.4037,
     "fence": 0.7085, "car": 0.8131, "pedestrian": 0.4284, "bicyclist": 0.7022},
    "rtseg eval espnet --weights camvid-official --data camvid --root CAMVID --split val",
)
_CITYSCAPES_MINI = _measured(
    "cityscapes-mini", 0.4456, 0.8089, 2, (512, 1024),
    {"road": 0.7661, "sidewalk": 0.7379, "building": 0.8296, "wall": 0.0, "fence": 0.0548, "pole": 0.3371, "traffic light": 0.0016,
     "traffic sign": 0.4834, "vegetation": 0.8966, "terrain": 0.1956, "sky": 0.8784, "person": 0.7388, "rider": 0.8048, "car": 0.7333,
     "truck": 0.0, "bus": 0.0005, "train": 0.0, "motorcycle": None, "bicycle": 0.5626},
    "rtseg eval espnet --weights cityscapes-official --data cityscapes --root CITYSCAPES_MINI --size 512x1024",
    note="2 frames, unofficial labels: a sanity check",
)

register_pretrained(PretrainedWeights(
    "espnet", "cityscapes-official", "343b0e77e8545d36113c4f3efbf1ee349256f25c97c9f9d5ddefe45f2f49763e",
    _espnet_card("espnet", 20, CITYSCAPES, "cityscapes", "espnet", {}, (_CITYSCAPES_MINI,),
                 notes="ESPNet p=2, q=8; 19 Cityscapes classes + output 19 = void; trained and tested at 1024x512"),
    url=f"{_ESPNET_FILES}/decoder/espnet_p_2_q_8.pth",
))
register_pretrained(PretrainedWeights(
    "espnet-c", "cityscapes-official", "836f28a2a31bd4fc8997001ab6b620d1f9b7b274a03b32d9f3a95c17a011b438",
    _espnet_card("espnet-c", 20, CITYSCAPES, "cityscapes", "espnet", {},
                 notes="ESPNet-C p=2, q=8 (the encoder, logits at 1/8 upsampled); 19 Cityscapes classes + output 19 = void"),
    url=f"{_ESPNET_FILES}/encoder/espnet_p_2_q_8.pth",
))
register_pretrained(PretrainedWeights(
    "espnet", "camvid-official", "7d354a257170322086dcd4c1e89a482454cf2c9d30b085e70883878dd59301af",
    _espnet_card("espnet", 12, CAMVID, "camvid", "espnet-camvid", {"decoder_skip": "level1-image"}, (_CAMVID_VAL,),
                 notes="ESPNet p=2, q=8; 11 CamVid classes + output 11 = void; its decoder sees the level-1 map with the image"),
    url=f"{_ESPNET_FILES}/decoder/espnet_p_2_q_8_camvid.pth",
))


# The CamVid zoo: networks trained from scratch by rtseg, shipped in camvid/ (written by tools/publish_zoo.py,
# which evaluates each file with `rtseg eval` and records its SHA-256 in camvid/index.json).
def _register_zoo(index_path: Path = PACKAGE_DIR / "camvid" / "index.json") -> None:
    import json

    if not index_path.is_file():
        return
    for item in json.loads(index_path.read_text()).values():
        register_pretrained(PretrainedWeights.shipped(f"camvid/{item['file']}", item.get("tag", "camvid"), item["sha256"],
                                                      item.get("deployment"), bool(item.get("default", False))))


_register_zoo()
