"""Recipe tooling: `rtseg recipes`, `rtseg train --print-config`, overrides inside staged recipes, the docs' recipe table."""
import json
import re
from pathlib import Path

import pytest

from rtseg.cli import main
from rtseg.config import ConfigError, list_recipes, load_config, stage_config, yaml_load
from rtseg.tasks import recipes

DOCS = Path(__file__).resolve().parents[1] / "docs" / "training.md"


def test_recipes_lists_every_packaged_recipe_with_model_dataset_and_stages():
    rows = {r["name"]: r for r in recipes()}
    assert sorted(rows) == list_recipes()
    fpl = rows["fplnet-cityscapes"]
    assert fpl["model"] == "fplnet-encoder -> fplnet" and fpl["dataset"] == "cityscapes" and fpl["stages"] == 2
    assert fpl["epochs"] == [500, 1000] and fpl["description"].startswith("FPLNet on Cityscapes")
    assert rows["demo"]["stages"] == 1 and rows["demo"]["dataset"] == "synthetic"


def test_recipes_command_prints_a_table_and_json(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for name in list_recipes():
        assert re.search(rf"^{re.escape(name)}\s", out, re.M), name
    assert main(["recipes", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)] == list_recipes()


def test_print_config_prints_the_merged_config_and_creates_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "fplnet-cityscapes", "train.epochs=2", "stages.full.train.batch_size=3", "--print-config"]) == 0
    printed = yaml_load(capsys.readouterr().out)
    assert printed == load_config("fplnet-cityscapes", ["train.epochs=2", "stages.full.train.batch_size=3"])
    assert [s["train"] for s in printed["stages"]] == [{"epochs": 2, "batch_size": 12}, {"epochs": 2, "batch_size": 3}]
    assert list(tmp_path.iterdir()) == []
    assert main(["train", "demo", "train.epoch=2", "--print-config"]) == 2  # a bad key is still an error
    assert "train.epoch" in capsys.readouterr().err


def test_a_plain_override_holds_in_every_stage_and_a_stage_override_in_one():
    base = load_config("fplnet-cityscapes")
    assert [stage_config(base, i)["train"]["epochs"] for i in range(2)] == [500, 1000]
    cfg = load_config("fplnet-cityscapes", ["train.epochs=1"])
    assert [stage_config(cfg, i)["train"]["epochs"] for i in range(2)] == [1, 1]
    cfg = load_config("fplnet-cityscapes", ["stages.0.train.epochs=3", "stages.full.data.label_scale=2"])
    assert [stage_config(cfg, i)["train"]["epochs"] for i in range(2)] == [3, 1000]
    assert [stage_config(cfg, i)["data"]["label_scale"] for i in range(2)] == [8, 2]
    # in command-line order: the later override wins
    cfg = load_config("fplnet-cityscapes", ["train.epochs=1", "stages.0.train.epochs=3"])
    assert [stage_config(cfg, i)["train"]["epochs"] for i in range(2)] == [3, 1]
    # a section no stage sets reaches every stage from the top
    cfg = load_config("fplnet-cityscapes", ["optimizer.lr=0.01"])
    assert [stage_config(cfg, i)["optimizer"]["lr"] for i in range(2)] == [0.01, 0.01]


@pytest.mark.parametrize("override, match", [
    ("stages.2.train.epochs=1", r"no stage '2'.*0 \(encoder\), 1 \(full\)"),
    ("stages.decoder.train.epochs=1", "no stage 'decoder'"),
    ("stages.0.train.epoch=1", r"stages\[0\].train.epoch"),
    ("stages.0=3", "a stage is a mapping"),
])
def test_bad_stage_overrides_are_refused_by_name(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("fplnet-cityscapes", [override])
    with pytest.raises(ConfigError, match="no stages"):
        load_config("demo", ["stages.0.train.epochs=1"])


def _documented_recipes() -> set[str]:
    """The recipe names in the first column of the recipe table of docs/training.md (``a-{b,c}`` expanded)."""
    text = DOCS.read_text()
    section = text[text.index("## The papers' recipes"):]
    section = section[: section.index("\n## ", 1)]
    names: set[str] = set()
    for cell in re.findall(r"^\| `([^`]+)` \|", section, re.M):
        m = re.fullmatch(r"(.*)\{([^}]*)\}(.*)", cell)
        names |= {m[1] + part + m[3] for part in m[2].split(",")} if m else {cell}
    return names


def test_the_docs_recipe_table_lists_every_shipped_recipe():
    assert _documented_recipes() == set(list_recipes())
