"""The trainer's callback protocol: the points of a run where loggers and training tricks plug in.

A callback subclasses :class:`Callback` and overrides the methods it needs; each receives the running
:class:`~rtseg.engine.trainer.Trainer` (its ``model``, ``optimizer``, ``config``, ``out_dir``, ``history``,
``dist``...). ``epoch`` is always the 0-based index of the epoch; the metrics row carries the 1-based
``metrics["epoch"]`` that metrics.csv shows. Callbacks run on every torchrun process unless
``main_process_only`` is true (the loggers set it: only the first process writes files).

Where callbacks come from, in the order they are called:

1. the model: a network may define ``training_callbacks(config) -> list[Callback]`` for its paper's
   training schedule (ESSNet's gradual grouping, :mod:`rtseg.models.gradual_grouping`). A new paper with its
   own schedule writes such a callback next to its model, returns it from ``training_callbacks`` and adds
   its config section to :data:`rtseg.config.DEFAULTS`; the trainer needs no edit. Weights handed from one
   stage to the next pass through the model's ``adapt_state_dict(state_dict)`` when it defines one
   (:func:`rtseg.engine.stages.load_stage_weights`);
2. the loggers the config lists (``logging.loggers``, :func:`rtseg.engine.loggers.build_loggers`);
3. the user's: ``Trainer(config, out, callbacks=[...])`` or ``train(config, out, callbacks=[...])``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

# The running rtseg.engine.trainer.Trainer; not imported, because the trainer imports this module (and so do models).
Trainer = Any

__all__ = ["Callback", "CallbackList"]


class Callback:
    """Base class of training callbacks: every method does nothing until overridden."""

    main_process_only: bool = False

    def on_train_start(self, trainer: Trainer) -> None:
        """Before the first epoch of this run (after a resume: before the first epoch left to train)."""

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Before the training pass of ``epoch`` (the model is the one about to be trained)."""

    def on_validation(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        """After validating at the end of ``epoch``: ``metrics`` is the full summary (``miou``, ``per_class_iou``, ...)."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        """After ``epoch``, before its checkpoint: ``metrics`` is its metrics.csv row (``epoch``, ``train_loss``, ``lr``,
        ``images_per_s``, ``epoch_s``, and when it was validated ``val_miou``, ``val_pixel_accuracy`` and one
        ``val_iou/CLASS`` per class, None for a class absent from the validation labels)."""

    def on_checkpoint(self, trainer: Trainer, epoch: int, path: Path) -> None:
        """After a checkpoint of ``epoch`` was written to ``path`` (``last.pt`` each epoch, ``best.pt`` when it improved);
        called on the first process only, which alone writes checkpoints."""

    def on_train_end(self, trainer: Trainer, summary: dict[str, Any]) -> None:
        """After the last epoch, with the summary that ``summary.json`` holds."""


_HOOKS = ("on_train_start", "on_epoch_start", "on_validation", "on_epoch_end", "on_checkpoint", "on_train_end")


class CallbackList:
    """Calls a hook on each callback in order, skipping ``main_process_only`` callbacks on the other processes."""

    def __init__(self, callbacks: Iterable[Callback], is_main: bool = True):
        self.callbacks = list(callbacks)
        self.is_main = is_main
        for cb in self.callbacks:
            if not any(callable(getattr(cb, hook, None)) for hook in _HOOKS):
                raise TypeError(f"callback {cb!r} has none of the hooks {', '.join(_HOOKS)}; subclass rtseg.engine.callbacks.Callback")

    def call(self, hook: str, trainer: Trainer, *args: Any) -> None:
        if hook not in _HOOKS:
            raise ValueError(f"unknown callback hook {hook!r}; expected one of {', '.join(_HOOKS)}")
        for cb in self.callbacks:
            if getattr(cb, "main_process_only", False) and not self.is_main:
                continue
            method = getattr(cb, hook, None)
            if method is not None:
                method(trainer, *args)

    def __iter__(self):
        return iter(self.callbacks)

    def __len__(self) -> int:
        return len(self.callbacks)
