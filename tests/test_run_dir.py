"""The run folder guard: refuse to reuse a run, --overwrite moves it aside, one writer at a time, temporaries cleaned."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from rtseg.engine.run_dir import RunDirError, prepare_run_dir
from rtseg.errors import UserError


def _finished_run(path, summary=None):
    path.mkdir(parents=True, exist_ok=True)
    (path / "best.pt").write_bytes(b"best weights")
    (path / "last.pt").write_bytes(b"last weights")
    (path / "metrics.csv").write_text("epoch,val_miou\n1,0.5\n")
    (path / "summary.json").write_text(json.dumps(summary or {"best_miou": 0.5, "epochs": 1}))


def test_new_folder_is_created_and_locked(tmp_path):
    with prepare_run_dir(tmp_path / "a" / "run") as run:
        assert run.state == "new" and run.path.is_dir()
        assert (run.path / ".lock").read_text().strip() == str(os.getpid())


def test_existing_run_is_refused_without_resume_or_overwrite(tmp_path):
    _finished_run(tmp_path / "run")
    with pytest.raises(RunDirError) as info:
        prepare_run_dir(tmp_path / "run")
    message = str(info.value)
    assert str(tmp_path / "run") in message and "--resume" in message and "--overwrite" in message
    assert isinstance(info.value, UserError)
    assert (tmp_path / "run" / "best.pt").read_bytes() == b"best weights"  # untouched
    # the refusal released the lock: a correct call goes through
    with prepare_run_dir(tmp_path / "run", resume=True) as run:
        assert run.state == "finished"


def test_stage_subfolder_counts_as_a_run(tmp_path):
    _finished_run(tmp_path / "run" / "encoder")
    with pytest.raises(RunDirError, match="encoder"):
        prepare_run_dir(tmp_path / "run")


def test_overwrite_moves_the_old_run_aside(tmp_path):
    _finished_run(tmp_path / "run")
    (tmp_path / "run" / "tensorboard").mkdir()
    with prepare_run_dir(tmp_path / "run", overwrite=True) as run:
        assert run.state == "new"
        assert run.replaced_to.parent == run.path and run.replaced_to.name.startswith(".replaced-")
        assert (run.replaced_to / "best.pt").read_bytes() == b"best weights"
        assert (run.replaced_to / "tensorboard").is_dir()
        assert sorted(p.name for p in run.path.iterdir()) == sorted([".lock", run.replaced_to.name])
    with prepare_run_dir(tmp_path / "run") as again:  # the moved-aside run does not count as a run in the folder
        assert again.state == "new"


def test_resume_and_overwrite_together_are_refused(tmp_path):
    with pytest.raises(RunDirError, match="contradict"):
        prepare_run_dir(tmp_path / "run", resume=True, overwrite=True)


def test_resume_of_nothing_is_refused(tmp_path):
    with pytest.raises(RunDirError, match="no run to continue"):
        prepare_run_dir(tmp_path / "empty", resume=True)


def test_resume_states(tmp_path):
    _finished_run(tmp_path / "done", {"best_miou": 0.61, "epochs": 3})
    before = (tmp_path / "done" / "summary.json").read_bytes()
    with prepare_run_dir(tmp_path / "done", resume=True) as run:
        assert run.state == "finished" and run.summary["best_miou"] == 0.61
    assert (tmp_path / "done" / "summary.json").read_bytes() == before
    # killed mid-run: last.pt but no summary (or a summary cut short) -> resume
    (tmp_path / "mid").mkdir()
    (tmp_path / "mid" / "last.pt").write_bytes(b"x")
    (tmp_path / "mid" / "summary.json").write_text('{"best_mi')
    with prepare_run_dir(tmp_path / "mid", resume=True) as run:
        assert run.state == "resume" and run.summary is None


def test_stray_temporaries_are_removed_and_nothing_else(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "stage1").mkdir(parents=True)
    strays = [run_dir / ".last.pt.a1b2c3.tmp", run_dir / ".metrics.csv.tmp", run_dir / "stage1" / ".best.pt.zz.tmp"]
    for p in strays:
        p.write_bytes(b"partial")
    keep = [run_dir / "notes.tmp", run_dir / ".hidden", run_dir / "stage1" / "data.txt"]
    for p in keep:
        p.write_bytes(b"keep")
    with prepare_run_dir(run_dir) as run:
        assert sorted(run.removed_temporaries) == sorted(strays)
    assert not any(p.exists() for p in strays) and all(p.exists() for p in keep)


def test_a_file_where_the_folder_should_be(tmp_path):
    (tmp_path / "run").write_text("x")
    with pytest.raises(RunDirError, match="is an existing file"):
        prepare_run_dir(tmp_path / "run")


def test_second_process_fails_at_once_naming_folder_and_pid(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from rtseg.engine.run_dir import prepare_run_dir
            run = prepare_run_dir({str(run_dir)!r})
            print("locked", flush=True)
            time.sleep(60)
        """)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError) as info:
            prepare_run_dir(run_dir)
        assert str(run_dir) in str(info.value) and f"PID {holder.pid}" in str(info.value)
    finally:
        holder.kill()
        holder.wait()
    with prepare_run_dir(run_dir) as run:  # a killed holder's lock is gone
        assert run.state == "new"


def test_lock_is_exclusive_within_one_process_too(tmp_path):
    with prepare_run_dir(tmp_path / "run"):
        with pytest.raises(RunDirError, match="in use"):
            prepare_run_dir(tmp_path / "run")
