"""Run directories: a re-opened run must hold the same config, up to execution-only settings."""
import os

import pytest

from lt_keras.errors import RunDirError
from lt_keras.runs import RunDir


def config(**train):
    return {"data": {"dataset": "mnist", "data_dir": "data/mnist"},
            "train": {"learning_rate": 0.1, "jit_compile": True, **train}}


def test_resumes_under_other_execution_settings_and_equivalent_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    RunDir(tmp_path / "run").open(config(), "--flagfile")
    moved = config(jit_compile=None)
    moved["data"]["data_dir"] = str(tmp_path / "data" / "mnist")
    RunDir(tmp_path / "run").open(moved, "--flagfile")  # same run: XLA choice and path spelling differ


def test_refuses_a_different_config(tmp_path):
    RunDir(tmp_path / "run").open(config(), "--flagfile")
    with pytest.raises(RunDirError, match=r"different configuration \(differs in \['train'\]\)"):
        RunDir(tmp_path / "run").open(config(learning_rate=0.2), "--flagfile")


def test_a_run_from_before_a_setting_existed_resumes_only_under_its_old_value(tmp_path):
    """config.json from before weight_decay_mode / augment: it resumes with decoupled decay and no
    augmentation (what it computed), and is refused with the new values."""
    RunDir(tmp_path / "run").open(config(), "--flagfile")
    RunDir(tmp_path / "run").open(config(weight_decay_mode="decoupled", augment="none"), "--flagfile")
    old_values = dict(prune_count="round", momentum_form="keras", adam_epsilon=1e-7, prune_rule="count",
                      initial_mask=False)  # what runs made before these settings computed with
    RunDir(tmp_path / "run").open(config(**old_values), "--flagfile")
    for changed in ({"weight_decay_mode": "coupled"}, {"augment": "crop_flip"}, {"prune_count": "floor"},
                    {"momentum_form": "pytorch"}, {"adam_epsilon": 1e-8}, {"prune_rule": "threshold"},
                    {"initial_mask": True}):
        with pytest.raises(RunDirError, match="different configuration"):
            RunDir(tmp_path / "run").open(config(**changed), "--flagfile")


def test_a_released_lock_file_is_removed_and_can_be_taken_again(tmp_path):
    from lt_keras.runs import release_lock, take_lock

    path = str(tmp_path / ".x.lock")
    held = take_lock(path, "busy", "wait")
    assert os.path.exists(path)
    release_lock(held, path)
    assert not os.path.exists(path)
    again = take_lock(path, "busy", "wait")  # a fresh file, locked
    release_lock(again, path)
