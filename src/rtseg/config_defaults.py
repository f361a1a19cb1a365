"""Every config key with its default, and merging configs over them (recipes, overrides, stages).

Below :mod:`rtseg.config_schema` (types and ranges) and :mod:`rtseg.config` (reading recipes), which both use it."""
from __future__ import annotations

import copy
import difflib
from typing import Any

from rtseg.errors import UserError

__all__ = ["DEFAULTS", "ConfigError", "merge_config", "stage_config"]


class ConfigError(UserError, ValueError):
    """A config file or override that does not fit the schema."""



# Every key a config may set, with its default. A recipe file sets only what differs.
DEFAULTS: dict[str, Any] = {
    "recipe": None,  # a short name, e.g. "fplnet-cityscapes"
    "description": "",  # where the recipe comes from (paper section)
    # aux_heads: training-only auxiliary heads, [{stage: NAME, weight: W}] (rtseg.models.aux_heads; weight
    # defaults to loss.aux_weight); they are not part of the saved weights, eval or export.
    # weights: the run starts from trained weights (a tag of model.name, a URL or a file, as create_model(weights=));
    # their card's build options apply unless options says otherwise. On a dataset with other classes only the
    # class layers start afresh, keeping the rows of classes of the same name; class_map {dataset class: weights'
    # class (or null)} pairs the rest by hand (rtseg.engine.finetune).
    "model": {"name": "erfnet", "num_classes": None, "options": {}, "aux_heads": None, "weights": None, "class_map": None},
    "data": {
        "dataset": "synthetic",  # synthetic | cityscapes | camvid | folder
        "root": None,
        "train_split": "train",
        "annotations": "fine",  # cityscapes: fine | coarse (gtCoarse over train + train_extra, for coarse pretraining)
        "val_split": "val",
        "image_size": [256, 512],  # H, W the images are resized to before augmentation (synthetic: drawn size)
        "crop_size": None,  # H, W random crop after scaling (None: no crop)
        # Several crop sizes: each epoch passes over the training set once per [H, W] (LiteSeg's
        # multi-scale training; overrides crop_size); every batch holds one size.
        "crop_sizes": None,
        "scale_range": [1.0, 1.0],  # random rescale factor range
        "hflip": False,
        "vflip": False,
        "translate": 0,  # max random translation in pixels (uncovered label pixels are ignored)
        "rotate": 0.0,  # max random rotation in degrees (uncovered label pixels are ignored)
        "color_jitter": 0.0,  # brightness/contrast/saturation factors drawn from [1 - s, 1 + s]
        "channel_noise": 0.0,  # std of a per-image offset per colour channel, as a fraction of 255
        "normalization": None,  # preset name; None: the model's own
        # auto | memory | off: decode the files once into memory (at image_size) when they fit in a quarter
        # of the free memory; the arrays are those the transforms would read, so results do not change
        "cache": "auto",
        "check_labels": True,  # scan every label map once for values outside the classes (remembered per file list)
        "label_scale": 1,  # labels downsampled by this factor (8 for encoder-only training)
        "input_scale": 1,  # input downsampled by this factor, labels kept (low-resolution input)
        "train_samples": 200,  # synthetic only
        "val_samples": 40,  # synthetic only
        "seed": 0,  # synthetic only: which scenes are drawn
    },
    "optimizer": {
        "name": "sgd",
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "nesterov": False,
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        # {parameter-name prefix: factor}: learning rate multiplied by factor for those parameters,
        # e.g. {encoder: 1.0e-16} nearly freezes an encoder (ESSNet thesis section 3.5.1). None: one rate.
        "lr_scale": None,
    },
    "schedule": {
        "name": "poly",  # poly | step | plateau | constant
        "power": 0.9,
        "step_every_epochs": None,  # poly: None updates every iteration; k updates once every k epochs
        "step_size": 50,  # step: epochs between decays
        "gamma": 0.1,  # step / plateau: decay factor
        "patience": 5,  # plateau
        "warmup_iters": 0,
    },
    # class_weights: None | enet | median-frequency | [list]. reduction: mean | sum over pixels (LiteSeg's
    # official code sums, hence its learning rates of 1e-7 / 1e-8).
    # name: ce | ohem | dice | lovasz | focal (rtseg.engine.losses); terms: a weighted sum instead of name,
    # [{name: ce, weight: 1}, {name: dice, weight: 0.5}]. ohem_min_kept None: 1/16 of the labelled pixels.
    "loss": {
        "ignore_index": 255, "class_weights": None, "class_weight_c": 1.02, "reduction": "mean",
        "name": "ce", "terms": None, "ohem_thresh": 0.7, "ohem_min_kept": None, "dice_smooth": 1.0,
        "lovasz_classes": "present", "focal_gamma": 2.0, "aux_weight": 0.4,
    },
    "train": {
        "epochs": 10,
        "batch_size": 8,
        "seed": 0,
        "num_workers": 0,
        # auto | fp32 | bf16 | fp16: auto trains in bf16 autocast (channels-last) on CPUs with native bf16,
        # bf16 or fp16 (with gradient scaling) on CUDA, fp32 elsewhere; the loss is always fp32
        "precision": "auto",
        "amp": False,  # older switch: with precision auto, true means fp16 on CUDA
        # auto | on | off: torch.compile of the training step; auto compiles single-process CPU runs of at least
        # 1000 iterations whose model keeps its layers (rtseg.engine.compiled_step)
        "compile": "auto",
        "val_every": 1,
        "device": "auto",
        "max_iters_per_epoch": None,
        "threads": None,
        "sync_bn": False,  # torchrun runs: convert BatchNorm to SyncBatchNorm
        "tensorboard": "auto",  # true | false | auto (log to OUT/tensorboard when tensorboard is installed)
        "ema": None,  # None (off) | decay, e.g. 0.9995: an exponential moving average of the weights (rtseg.engine.ema)
        # the average's BatchNorm statistics: reestimate (from ema_bn_batches training batches before each validation),
        # average (with the same decay) or copy (the live network's; what runs before ema_bn existed did)
        "ema_bn": "reestimate",
        "ema_bn_batches": 20,
        # parts kept fixed (no gradient, BatchNorm statistics held): family aliases (encoder) or module paths, for the
        # first freeze_epochs epochs or, with freeze_epochs null, the whole run
        "freeze": None,
        "freeze_epochs": None,
    },
    # Knowledge distillation (rtseg.engine.distill): teacher MODEL@WEIGHTS (e.g. espnet@camvid-official) or a weights
    # file with its card, or a list of them (an ensemble: mapped logits averaged); loss kl (pixel-wise, x T^2) or cwd
    # (channel-wise, Shu et al. 2021); weight multiplies the term added to the loss; class_map {student class: teacher
    # class or [classes]} where names differ; void: a teacher's void outputs are dropped before the softmax (drop), or
    # the pixels where a teacher's most likely output is void are also left out of the term (ignore); pixels: the term
    # covers every labelled pixel (labelled) or only those where the teacher's most likely class is the label (correct).
    "distill": {"teacher": None, "loss": "kl", "temperature": 1.0, "weight": 1.0, "class_map": None, "void": "drop",
                "pixels": "labelled"},
    # Built-in loggers (rtseg.engine.loggers), each a training callback: csv (OUT/metrics.csv), tensorboard
    # (OUT/tensorboard, as train.tensorboard says), wandb and mlflow (optional extras: pip install 'rtseg[wandb]').
    "logging": {
        "loggers": ["csv", "tensorboard"],
        "wandb": {"project": "rtseg", "entity": None, "mode": None},  # mode: None (online) | offline | disabled
        "mlflow": {"tracking_uri": None, "experiment": "rtseg"},  # tracking_uri None: MLflow's default (./mlruns)
    },
    # Multi-stage recipes (e.g. encoder first, then the full network): a list of partial configs
    # merged over the rest of this file, run in order, each stage starting from the previous one's weights.
    "stages": None,
    # Gradual grouping (ESSNet thesis section 3.5), for models built with gradual_grouping=True: alpha of
    # every rtseg.models.gradual_grouping.GradualGroupedConv2d goes from 1 (dense) to 0 (grouped) over ramp_epochs
    # starting at start_epoch (shape linear | cosine), then stays 0. The model's GradualGroupingCallback reads it.
    "gradual_grouping": {"ramp_epochs": 0, "start_epoch": 0, "shape": "linear"},
    # Validation protocol (rtseg.evaluation.EvalProtocol): input scales whose probabilities are averaged,
    # horizontal-flip averaging, and sliding-window inference with [H, W] windows (None: whole image).
    "eval": {"scales": [1.0], "flip": False, "window": None, "stride": None},
    "output": {"dir": "runs/{recipe}"},
}


def merge_config(base: dict[str, Any], update: dict[str, Any], path: str = "", schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """``base`` updated by ``update`` recursively (copies); with a ``schema``, unknown keys are refused by name."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        where = f"{path}{key}"
        if schema is not None and key not in schema:
            close = difflib.get_close_matches(key, list(schema), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"unknown config key {where!r}{hint}; allowed at this level: {', '.join(schema)}")
        sub_schema = schema.get(key) if schema is not None else None
        free_form = key in ("options", "stages") or not isinstance(sub_schema, dict)
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not free_form:
            out[key] = merge_config(out[key], value, where + ".", sub_schema)
        else:
            out[key] = copy.deepcopy(value)
    return out


def stage_config(config: dict[str, Any], index: int) -> dict[str, Any]:
    """The complete config of stage ``index`` of a staged ``config``: the stage's keys merged over the rest of the config.

    The stage's keys are checked against :data:`DEFAULTS` (errors name ``stages[i].key``); ``name`` only names the
    stage. A stage that names another network without ``options`` starts with no options: those of one network do
    not carry over to another. The runner (:mod:`rtseg.engine.stages`) and :func:`load_config` both use this.
    """
    stage = config["stages"][index]
    base = {k: v for k, v in config.items() if k != "stages"}
    merged = merge_config(base, {k: v for k, v in stage.items() if k != "name"}, f"stages[{index}].", DEFAULTS)
    stage_model = stage.get("model") or {}
    if "name" in stage_model and "options" not in stage_model:
        merged["model"]["options"] = {}
    return merged
