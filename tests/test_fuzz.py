"""Property-based fuzzing (Hypothesis) of the three kinds of text a user or a stranger hands rtseg: config overrides,
model cards (JSON inside a weights file) and dataset.yaml files. Whatever is generated, the answer is a result or a
user error (:class:`rtseg.errors.UserError`), never another exception, and within a few seconds."""
from __future__ import annotations

import json
import math
import time

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis", reason="the fuzz tests need hypothesis (pip install -e '.[test]')")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import rtseg  # noqa: E402
from rtseg.card import ModelCard  # noqa: E402
from rtseg.config import DEFAULTS, load_config  # noqa: E402
from rtseg.errors import UserError  # noqa: E402

SECONDS = 3.0  # the bound on any one input
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# text without ':' or '/' so that no generated value names a URL or an absolute path (nothing may be fetched)
_words = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-.0123456789 ", min_size=0, max_size=12)
_tricky = st.sampled_from([None, True, False, 0, -1, 1, 2, 10**12, -(10**12), 0.5, -0.0, float("nan"), float("inf"), "", "auto", "x",
                           [], [0], [0, 0], [1, 2, 3, 4], [[1], 2], {}, {"a": 1}, "[1, 2", "{a: 1", "&a [1]", "*a", "!!python/object:os.system",
                           "1e400", "0x10", "-5x10", "360x480"])
_scalars = st.one_of(_tricky, st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True), _words)
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_words, inner, max_size=3)), max_leaves=8)


def _keys() -> list[str]:
    keys = []
    for section, value in DEFAULTS.items():
        if isinstance(value, dict):
            keys += [f"{section}.{k}" for k in value]
        else:
            keys.append(section)
    return keys + ["model.options.q", "model.options.dilations", "model.options.stage3_modules", "train.epochz", "nosuch.section"]


def _yaml_text(value) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, allow_nan=True).replace("NaN", ".nan").replace("Infinity", ".inf")


def _bounded(fn):
    t0 = time.perf_counter()
    try:
        return fn()
    except UserError:
        return None
    finally:
        assert time.perf_counter() - t0 < SECONDS, "an input took longer than the bound"


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(_keys()), _values), min_size=1, max_size=4))
def test_config_overrides_give_a_config_or_a_user_error(pairs):
    overrides = [f"{key}={_yaml_text(value)}" for key, value in pairs]

    def run():
        config = load_config("demo", overrides)
        from rtseg.engine.trainer import _preflight

        _preflight(config)  # start weights, frozen parts and teachers: what a run checks before it writes anything
        mcfg = config["model"]
        with torch.device("meta"):  # the options reach the builder's checks without allocating anything
            rtseg.create_model(mcfg["name"], num_classes=mcfg.get("num_classes") or 19, **(mcfg.get("options") or {}))
        return config

    _bounded(run)


def _card_dict() -> dict:
    model = rtseg.create_model("espnet-c", num_classes=3, q=2)
    return json.loads(model.rtseg_card.to_json())


_CARD = _card_dict()
_CARD_PATHS = [("model",), ("num_outputs",), ("size_divisor",), ("options",), ("options", "q"), ("options", "p"), ("normalization",),
               ("normalization", "mean"), ("normalization", "std"), ("normalization", "post_scale"), ("normalization", "channel_order"),
               ("classes",), ("classes", "names"), ("classes", "palette"), ("classes", "ignore_index"), ("training",), ("metrics",),
               ("version",), ("schema",), ("notes",), ("unknown_field",)]


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(_CARD_PATHS), _values), min_size=1, max_size=3))
def test_card_json_gives_a_card_or_a_user_error(edits):
    data = json.loads(json.dumps(_CARD))
    for path, value in edits:
        target = data
        for key in path[:-1]:
            if not isinstance(target.get(key), dict):
                target[key] = {}
            target = target[key]
        target[path[-1]] = value

    def run():
        card = ModelCard.from_json(json.dumps(data, allow_nan=True))
        assert all(math.isfinite(v) and v > 0 for v in card.normalization.std)
        with torch.device("meta"):
            rtseg.create_model(card.model, **card.build_kwargs())
        return card

    _bounded(run)


_SPEC_KEYS = ["classes", "ignore_index", "colors", "ignore_color", "label_suffix", "splits", "palette", "label_map", "reduce_zero_label", "other"]


@FUZZ
@given(spec=st.one_of(st.dictionaries(st.sampled_from(_SPEC_KEYS), _values, max_size=5), _values, _words))
def test_dataset_yaml_gives_classes_or_a_user_error(tmp_path_factory, spec):
    from rtseg.data.folder import folder_classes

    root = tmp_path_factory.mktemp("ds")
    if isinstance(spec, dict) and "classes" not in spec and hash(json.dumps(spec, default=str)) % 2:
        spec["classes"] = ["road", "car"]  # half the mappings get valid classes, so the other keys are reached
    (root / "dataset.yaml").write_text(_yaml_text(spec))
    _bounded(lambda: folder_classes(root))
