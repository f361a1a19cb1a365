"""rtseg select (issue 29): the pick under a latency budget with a fake timing backend (fast, deterministic), its cache,
the CPU probe that keeps emulated paths out, and one real end-to-end run on two small networks. Also bench --weights."""
from __future__ import annotations

import json

import pytest
import torch

from rtseg.cli import main
from rtseg.cpu import FAKE_FLAGS_VARIABLE, cpu_info
from rtseg.deploy.paths import available_paths
from rtseg.tasks import _select
from rtseg.tasks._select import select

AVX2 = "fpu sse sse2 avx avx2 fma"
AMX = AVX2 + " avx512f avx512_vnni avx512_bf16 amx_bf16 amx_int8"
NETWORKS = ["espnet", "essnet-b-dg2", "fplnet"]


def fake_timer(table: dict[tuple[str, str], float], calls: list | None = None):
    def timer(cands, paths, size, threads, rounds, calibration):
        if calls is not None:
            calls.append((tuple(sorted(f"{c.model}@{c.tag}" for c in cands)), tuple(paths)))
        return {f"{c.model}@{c.tag}/{p}": table[(c.model, p)] for c in cands for p in paths}
    return timer


# eager, optimized and OpenVINO fp32 / bf16 per network (ms)
TABLE = {("espnet", "torch"): 48.0, ("espnet", "torch-optimized"): 30.0, ("espnet", "openvino-fp32"): 27.0, ("espnet", "openvino-bf16"): 17.0,
         ("essnet-b-dg2", "torch"): 36.0, ("essnet-b-dg2", "torch-optimized"): 25.0, ("essnet-b-dg2", "openvino-fp32"): 18.0,
         ("essnet-b-dg2", "openvino-bf16"): 11.0,
         ("fplnet", "torch"): 76.0, ("fplnet", "torch-optimized"): 50.0, ("fplnet", "openvino-fp32"): 56.0, ("fplnet", "openvino-bf16"): 38.0}
PATHS = ["torch", "torch-optimized", "openvino-fp32", "openvino-bf16"]


def shipped(networks: list[str]) -> tuple[str, ...]:
    """Every CamVid round shipped in the package for these networks (model@tag); the official release is not downloaded here."""
    from rtseg.pretrained import list_pretrained

    return tuple(sorted(f"{e.model}@{e.tag}" for e in list_pretrained()
                        if e.model in networks and e.tag.startswith("camvid") and e.file is not None))


@pytest.fixture
def amx(monkeypatch, tmp_path):
    monkeypatch.setenv(FAKE_FLAGS_VARIABLE, AMX)
    monkeypatch.setenv("RTSEG_CACHE", str(tmp_path / "cache"))
    pytest.importorskip("openvino")


def test_the_pick_is_the_most_accurate_row_within_the_budget(amx):
    result = select(40, networks=NETWORKS, paths=PATHS, timer=fake_timer(TABLE))
    fitting = [r for r in result.rows if r.passes and r.ms <= 40]
    best = max(r.miou for r in fitting)
    assert result.fits and result.pick.miou >= best - _select.TIE
    assert result.pick.ms == min(r.ms for r in fitting if r.miou >= best - _select.TIE)
    # a later round with recorded reduced-precision accuracy is preferred over the first round of the same network
    assert best > 0.68 and result.pick.tag != "camvid"
    assert [r.ms for r in result.rows] == sorted(r.ms for r in result.rows) and len(result.rows) == len(PATHS) * len(shipped(NETWORKS))
    assert result.conditions["cpu_kind"] == "AVX-512 BF16 + AMX" and result.conditions["size"] == [360, 480]


def test_rows_within_the_tie_of_the_best_go_to_the_fastest(amx, monkeypatch):
    every_round = _select.candidates
    first_rounds = lambda dataset, networks: (lambda c, s: ([x for x in c if x.tag == "camvid"], s))(*every_round(dataset, networks))
    monkeypatch.setattr(_select, "candidates", first_rounds)
    result = select(40, networks=NETWORKS, paths=PATHS, timer=fake_timer(TABLE))
    # fplnet (0.6625) and essnet-b-dg2 (0.6629) tie within 0.001; essnet-b-dg2 on OpenVINO bf16 is the fastest of them
    assert (result.pick.model, result.pick.path, result.pick.ms) == ("essnet-b-dg2", "openvino-bf16", 11.0) and result.fits
    assert result.pick.accuracy_from == "recorded" and result.pick.miou == pytest.approx(0.6628, abs=1e-4)


def test_a_budget_only_the_less_accurate_network_meets_picks_it_and_nothing_fitting_picks_the_fastest(amx):
    table = {**TABLE, ("essnet-b-dg2", "openvino-bf16"): 19.0, ("espnet", "openvino-bf16"): 16.0}
    assert (lambda r: (r.pick.model, r.fits))(select(17.5, networks=NETWORKS, paths=PATHS, timer=fake_timer(table))) == ("espnet", True)
    none = select(5, networks=NETWORKS, paths=PATHS, timer=fake_timer(table))
    assert not none.fits and (none.pick.model, none.pick.path) == ("espnet", "openvino-bf16")


def test_a_path_that_failed_or_was_never_checked_is_never_picked(amx, monkeypatch):
    from rtseg.pretrained import get_pretrained

    entry = get_pretrained("essnet-b-dg2", "camvid")
    failing = {**entry.deployment, "openvino-bf16": {"miou_change": -0.004, "goal": 0.002, "pass": False}}
    monkeypatch.setattr(type(entry), "deployment", property(lambda self: failing if self.model == "essnet-b-dg2" else {}), raising=False)
    result = select(40, networks=NETWORKS, paths=PATHS, timer=fake_timer(TABLE))
    rows = {(r.model, r.path): r for r in result.rows}
    assert not rows[("essnet-b-dg2", "openvino-bf16")].passes and "beyond the bf16 goal" in rows[("essnet-b-dg2", "openvino-bf16")].note
    assert rows[("fplnet", "openvino-bf16")].accuracy_from == "unverified" and not rows[("fplnet", "openvino-bf16")].passes
    assert result.pick.path != "openvino-bf16" and (result.pick.model, result.pick.path) == ("essnet-b-dg2", "openvino-fp32")


def test_emulated_bf16_is_never_offered_on_a_cpu_without_native_bf16(monkeypatch, tmp_path):
    monkeypatch.setenv(FAKE_FLAGS_VARIABLE, AVX2)
    monkeypatch.setenv("RTSEG_CACHE", str(tmp_path / "cache"))
    assert cpu_info().kind == "AVX2 only" and not cpu_info().native_bf16 and cpu_info().faked
    why = available_paths()
    assert "emulated" in why["torch-bf16"] and "emulated" in why["openvino-bf16"]
    result = select(40, networks=NETWORKS, paths=PATHS, timer=fake_timer(TABLE))
    assert {r.path for r in result.rows} == {"torch", "torch-optimized", "openvino-fp32"}
    assert "openvino-bf16" in result.skipped and result.pick.path != "openvino-bf16"


def test_every_auto_precision_follows_the_cpu_probe(monkeypatch):
    from rtseg.deploy.optimize import optimize
    from rtseg.deploy.precision import native_bf16
    from rtseg.engine.precision import resolve_precision
    import rtseg

    model = rtseg.create_model("espnet-c", num_classes=3, q=2)
    monkeypatch.setenv(FAKE_FLAGS_VARIABLE, AVX2)
    assert resolve_precision("auto", torch.device("cpu")).name == "fp32" and not native_bf16()[0]
    assert optimize(model, (32, 64), channels_last=False, compile=False, precision="auto").rtseg_optimization.precision == "fp32"
    monkeypatch.setenv(FAKE_FLAGS_VARIABLE, AMX)
    assert resolve_precision("auto", torch.device("cpu")).name == "bf16" and native_bf16()[0]


def test_timings_are_cached_per_machine_and_a_second_call_measures_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv(FAKE_FLAGS_VARIABLE, AVX2)
    monkeypatch.setenv("RTSEG_CACHE", str(tmp_path / "cache"))
    calls: list = []
    monkeypatch.setattr(_select, "real_timer", fake_timer(TABLE, calls))
    first = select(40, networks=["espnet", "fplnet"], paths=["torch", "openvino-fp32"])
    second = select(40, networks=["espnet", "fplnet"], paths=["torch", "openvino-fp32"])
    assert len(calls) == 1 and all(r.cached for r in second.rows) and not any(r.cached for r in first.rows)
    select(40, networks=["espnet", "fplnet"], paths=["torch", "torch-optimized"])  # only the new path is timed
    assert calls[-1] == (shipped(["espnet", "fplnet"]), ("torch-optimized",))
    monkeypatch.setenv(FAKE_FLAGS_VARIABLE, AMX)  # another CPU: another cache
    select(40, networks=["espnet"], paths=["torch"])
    assert len(calls) == 3 and len(list((tmp_path / "cache" / "select").iterdir())) == 2


def test_bad_select_options_are_one_line_errors(tmp_path, capsys):
    for argv, expected in [(["select", "--budget-ms", "0"], "--budget-ms"), (["select", "--budget-ms", "10", "--paths", "tpu"], "unknown path"),
                           (["select", "--budget-ms", "10", "--networks", "nonet"], "no trained camvid weights here for nonet"),
                           (["select", "--budget-ms", "10", "--verify", str(tmp_path / "none")], "--verify"),
                           (["select", "--budget-ms", "10", "--threads", "100000"], "--threads")]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, err


def test_select_end_to_end_on_two_small_networks(tmp_path, monkeypatch, capsys):
    """Real builds and timings (small input, few rounds), the table, the JSON and the exported pick."""
    pytest.importorskip("openvino")
    monkeypatch.setenv("RTSEG_CACHE", str(tmp_path / "cache"))
    argv = ["select", "--budget-ms", "1000", "--networks", "espnet,essnet-b-dg2", "--paths", "torch,openvino-fp32", "--size", "90x120",
            "--rounds", "2", "--threads", "2", "--json", str(tmp_path / "pick.json"), "--export", str(tmp_path / "pick.onnx")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    record = json.loads((tmp_path / "pick.json").read_text())
    pick = record["pick"]
    assert pick["model"] == "essnet-b-dg2" and pick["fits_budget"] and 0 < pick["ms"] < 1000  # the more accurate of the two
    assert len(record["rows"]) == 2 * len(shipped(["espnet", "essnet-b-dg2"])) and all(r["ms"] > 0 for r in record["rows"])
    assert record["conditions"]["threads"] == 2
    assert "* | essnet-b-dg2" in out and "pick (within the 1000 ms budget)" in out
    exported = tmp_path / ("pick.xml" if pick["path"] == "openvino-fp32" else "pick.pt")
    assert exported.is_file() and record["exported"]["out"] == str(exported)


def test_bench_takes_a_weights_tag_and_precision_auto_alone(capsys):
    assert main(["bench", "fplnet", "--weights", "camvid", "--size", "64x96", "--warmup", "0", "--iters", "1", "--json", "/dev/null"]) == 0
    out = capsys.readouterr().out
    assert "fplnet" in out and "camvid val mIoU" in out
    assert main(["bench", "espnet-c", "--precision", "auto", "--compile", "off", "--size", "32x64", "--warmup", "0", "--iters", "1"]) == 0
    assert "optimized" in capsys.readouterr().out


def test_cpu_kinds_and_the_thread_bound(monkeypatch):
    from rtseg.cpu import check_threads, available_cpus
    from rtseg.errors import OptionError

    for flags, kind in [(AVX2, "AVX2 only"), (AVX2 + " avx512f", "AVX-512 (no native bf16)"), (AVX2 + " avx512f avx512_bf16", "AVX-512 BF16"),
                        (AMX, "AVX-512 BF16 + AMX")]:
        monkeypatch.setenv(FAKE_FLAGS_VARIABLE, flags)
        assert cpu_info().kind == kind and "flags faked" in cpu_info().describe()
    assert cpu_info().int8_dot_product and "AMX-BF16" in cpu_info().named_flags
    check_threads(available_cpus())
    with pytest.raises(OptionError, match="logical CPU"):
        check_threads(4 * available_cpus() + 1)
    with pytest.raises(OptionError, match="whole number"):
        check_threads(0)


def test_a_path_whose_package_is_missing_says_how_to_install_it(monkeypatch):
    from rtseg.deploy import paths

    monkeypatch.setenv(FAKE_FLAGS_VARIABLE, AMX)
    monkeypatch.setattr(paths, "_has", lambda module: module not in ("openvino", "nncf"))
    why = paths.available_paths(calibration=True)
    assert "pip install 'rtseg[openvino]'" in why["openvino-fp32"] and why["onnxruntime-int8"] is None and why["torch-bf16"] is None
    assert "calibration" in paths.available_paths(calibration=False)["onnxruntime-int8"]


def test_verify_measures_the_reduced_paths_on_real_images(tmp_path, monkeypatch, capsys):
    from conftest import shared_path

    pytest.importorskip("openvino")
    root = shared_path("data", "camvid")
    monkeypatch.setenv("RTSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(FAKE_FLAGS_VARIABLE, AMX)  # bf16 offered whatever this CPU is (a decision; the arithmetic is OpenVINO's)
    result = select(1000, networks=["espnet"], paths=["torch", "openvino-bf16"], verify=root, verify_images=2, rounds=1, threads=2,
                    size=(180, 240))
    rows = {r.path: r for r in result.rows}
    assert rows["openvino-bf16"].accuracy_from == "measured here" and abs(rows["openvino-bf16"].miou_change) < 0.05
    assert rows["torch"].accuracy_from == "fp32" and rows["torch"].miou_change == 0.0
