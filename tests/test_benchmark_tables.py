"""The tables of benchmarks/deploy_table.py: which models meet the 1.5x goal, and the rates quoted for those that miss it."""
from pathlib import Path

import pytest
from conftest import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "deploy_table.py"


@pytest.fixture(scope="module")
def deploy_table():
    return load_script(SCRIPT)


def record(model, eager, optimized, cl, compiled, ort, macs=10e9):
    return {"model": model, "size": [360, 640], "params": 1000, "macs": macs, "threads": 2, "rounds": 5, "warmup": 1,
            "device_name": "cpu", "torch": "x", "onnxruntime": "y", "eager_ms": eager, "optimized_ms": optimized,
            "optimized_cl_ms": cl, "compiled_ms": compiled, "onnxruntime_ms": ort}


def test_goal_counts_the_best_optimized_pytorch_path_not_onnxruntime(deploy_table):
    records = [
        {"kind": "attainable_rate", "threads": 2, "matmul_gmacs_per_s": 80.0, "conv3x3_gmacs_per_s": 100.0},
        record("fast", 200.0, 190.0, 150.0, 100.0, 300.0),  # compiled: 2.0x
        record("slow", 200.0, 190.0, 180.0, 160.0, 50.0),  # best PyTorch path 1.25x; ORT's 4x does not count
    ]
    text = deploy_table.tables(records)
    assert "met by 1 of 2 models" in text
    assert "| fast | 1,000 | 10.00 | 200.0 | 190.0 | 150.0 | 100.0 | 300.0 | 2.00x | 50 / 100 | 0.67x |" in text
    # 10 GMAC in 200 ms = 50 GMAC/s eager, 62.5 optimized (62.5 % of the 100 GMAC/s attainable); 1.5x needs 75
    assert "- slow: 1.250x; eager runs at 50 GMAC/s, the best optimized path at 62 (62% of attainable); " \
           "1.5x would need 75 GMAC/s (75% of attainable)" in text
    assert "100.0 GMAC/s (256->256 3x3 convolution" in text


def test_records_without_a_compiled_time_still_tabulate(deploy_table):
    old = record("old", 150.0, 140.0, 100.0, 0.0, 120.0)
    del old["compiled_ms"]
    text = deploy_table.tables([old])
    assert "| old |" in text and "| - |" in text and "met by 1 of 1 models" in text


def test_best_deployed_path_counts_only_paths_whose_accuracy_passes(deploy_table, tmp_path):
    import json

    fast_bf16 = record("m", 300.0, 290.0, 250.0, 200.0, 180.0)
    fast_bf16.update(torch_bf16_ms=160.0, openvino_fp32_ms=170.0, openvino_bf16_ms=100.0,
                     argmax_agreement={"torch_bf16": 0.995, "openvino_bf16": 0.98})  # OpenVINO bf16 below the 99 % bar
    text = deploy_table.tables([fast_bf16])
    assert "| 100.0 (fails accuracy) | 1.88x (torch bf16) |" in text  # 300 / 160
    assert "met by 0 of 1 models; fastest path: torch bf16 for 1." in text and "- m: 1.88x (torch bf16)" in text
    # measured on real data (benchmarks/precision_camvid.py), OpenVINO bf16 passes after all
    acc = tmp_path / "acc.json"
    acc.write_text(json.dumps([{"model": "m", "paths": {"openvino-bf16": {"pass": True}, "torch-bf16": {"pass": False}}}]))
    text = deploy_table.tables([fast_bf16], deploy_table.load_accuracy(acc))
    assert "| 160.0 (fails accuracy) | 170.0 | 100.0 | 3.00x (OpenVINO bf16) |" in text
    assert "met by 1 of 1 models" in text


def _script(name):
    return load_script(SCRIPT.parent / f"{name}.py")


def test_zoo_table_replaces_only_the_text_between_its_markers():
    zoo_table = _script("zoo_table")
    doc = f"# Zoo\n\nprose before\n\n{zoo_table.BEGIN}\nold table\n{zoo_table.END}\n\nprose after\n"
    new = zoo_table.into_document(doc, "| new |")
    assert "old table" not in new and "| new |" in new
    assert new.startswith("# Zoo\n\nprose before\n\n") and new.endswith("\n\nprose after\n")
    assert zoo_table.into_document(new, "| newer |").count(zoo_table.BEGIN) == 1
    # a document without markers keeps its text and gains the block at the end
    appended = zoo_table.into_document("# Zoo\n", "| t |")
    assert appended.startswith("# Zoo\n\n" + zoo_table.BEGIN) and appended.rstrip().endswith(zoo_table.END)


def test_precision_table_lists_timings_only_for_timed_records():
    precision = _script("precision_camvid")
    path = {"argmax_agreement": 1.0, "miou": 0.5, "miou_change": 0.0, "goal": 0.002, "pass": True}
    untimed = {"model": "a", "weights": "w", "data": "camvid", "split": "val", "images": 101, "size": [360, 480], "miou_fp32": 0.5,
               "paths": {"torch-bf16": dict(path)}}
    timed = dict(untimed, model="b", fp32_eager_ms=40.0, paths={"torch-bf16": dict(path, ms=20.0), "ort-fp32": dict(path, ms=30.0)})
    text = precision.table([untimed, timed])
    timing = text.split("\n\n")[1].splitlines()
    assert timing[0] == "| model | weights | size | fp32 eager ms | torch-bf16 ms | ort-fp32 ms |"
    assert timing[2:] == ["| b | w | 360x480 | 40.0 | 20.0 | 30.0 |"] and "nan" not in text
    shrunk = dict(timed, model="c", network_input=[180, 240])
    assert "| c | w | 360x480 (input 180x240) | 40.0 |" in precision.table([shrunk])


def test_zoo_table_names_the_network_input_of_weights_trained_on_shrunk_images():
    zoo_table = _script("zoo_table")
    row = {"model": "fplnet", "tag": "camvid", "params": 499_611, "macs": 2.84e9, "network_input": (360, 480), "miou": 0.66,
           "pixel_accuracy": 0.92, "per_class": {"road": 0.96}, "epochs": 100, "wall_time_s": 7200.0, "eager_ms": 75.9,
           "best_ms": 33.5, "best_path": "nncf-int8"}
    shrunk = dict(row, model="farseenet", network_input=(180, 240))
    lines = zoo_table.markdown([row, shrunk], None).splitlines()
    assert lines[2].startswith("| fplnet | camvid | 0.500 M | 2.84 |")
    assert lines[3].startswith("| farseenet (input 180x240) | camvid |") and "2.0 h" in lines[3] and "2.27x" in lines[3]


def test_zoo_table_says_when_the_published_epoch_came_before_the_runs_end():
    zoo_table = _script("zoo_table")
    row = {"model": "essnet-b-dg2", "tag": "camvid", "params": 421_000, "macs": 2.53e9, "network_input": (360, 480), "miou": 0.66,
           "pixel_accuracy": 0.92, "per_class": {}, "epochs": 85, "run_epochs": 100, "wall_time_s": 6240.0}
    finished = dict(row, epochs=100)
    lines = zoo_table.markdown([row, finished, dict(row, run_epochs=None)], None).splitlines()
    assert "| 85 of 100 |" in lines[2]
    assert "| 100 |" in lines[3] and " of " not in lines[3]
    assert "| 85 |" in lines[4]


def test_compute_behind_weights_counts_the_run_they_started_from():
    from types import SimpleNamespace as NS

    zoo_table = _script("zoo_table")
    first = NS(training=NS(by="rtseg trainer", images_seen=None, epochs=100, images=367, wall_time_s=3600.0, config={"train": {"threads": 2}},
                           start_weights=None))
    second = NS(training=NS(by="rtseg trainer", images_seen=36_000, epochs=100, images=367, wall_time_s=1800.0,
                            config={"train": {"threads": 2}}, start_weights="fplnet/camvid (sha256 4ab783ed80936e18abc)"))
    by_sha = {"4ab783ed80936e18abcdef": NS(card=first)}
    assert zoo_table.compute_spent(first, by_sha) == (36_700, 2.0)
    assert zoo_table.compute_spent(second, by_sha) == (72_700, 3.0)
    official = NS(training=NS(by="the ESPNet authors", images_seen=None, epochs=None, images=None, wall_time_s=None, config=None, start_weights=None))
    assert zoo_table.compute_spent(official, by_sha) == (None, None)


def test_every_cpu_tables_in_the_docs_are_the_committed_records():
    """docs/benchmarks.md quotes benchmarks/every_cpu.py --table of the committed results, so neither can go stale alone."""
    import json

    every_cpu = _script("every_cpu")
    root = Path(__file__).resolve().parents[1]
    records = json.loads((root / "benchmarks" / "results-every-cpu.json").read_text())
    docs = (root / "docs" / "benchmarks.md").read_text()
    rendered = every_cpu.table(records)
    for line in rendered.splitlines():
        if line.startswith("| ") and "|---" not in line:
            assert line in docs, line
    assert all(r["cpu_flags"] and r["cpu"] in docs for r in records)
