"""The one training engine: its schedule, its data pipeline's memory, and NNI's version check."""

from __future__ import annotations

import copy
import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import mnist_idx, run_main
from nas.search.nni_internals import NNI_VERSION, NniVersionError, check_nni_version
from nas.space.spec import decode, to_json
from nas.training.config import TaskConfig, TrainingRecipe
from nas.training.data import TensorImages, load_task_data
from nas.training.engine import Trainer, warmup_cosine

TINY_NET = decode(["r1_k3_s22_e1_i8_o8", "r1_k3_s22_e3_i8_o16"], stem_channels=8, head_channels=32, resolution=32,
                  num_classes=10)


def cosine_formula(step: int, peak: float, warmup: int, total: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def test_the_learning_rate_of_every_step_is_linear_warm_up_then_cosine():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.05)
    schedule = warmup_cosine(optimizer, warmup_steps=7, total_steps=40)
    seen = []
    for _ in range(40):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert seen == pytest.approx([cosine_formula(step, 0.05, 7, 40) for step in range(40)], rel=1e-9, abs=1e-12)


def test_final_training_steps_follow_the_formula_and_resume_exactly():
    data = load_task_data(TaskConfig(subset=400, threads=1), 32, device="cpu")
    recipe = TrainingRecipe(epochs=3, warmup_epochs=1, batch_size=64, eval_batch_size=200)
    trainer = Trainer(TINY_NET, data, recipe)
    steps = trainer.steps_per_epoch
    rates = []
    trainer.fit_epoch(lambda step, total, loss: rates.append(trainer.optimizer.param_groups[0]["lr"]))
    # Read after each step: the rate of the next one.
    assert rates == pytest.approx([cosine_formula(s + 1, recipe.lr, steps, 3 * steps) for s in range(steps)])
    state = copy.deepcopy(trainer.state())
    second = trainer.fit_epoch()
    resumed = Trainer(TINY_NET, data, recipe)
    resumed.load_state(state)
    again = resumed.fit_epoch()
    assert (again.loss, again.val_accuracy, again.val_accuracy_ema) == (second.loss, second.val_accuracy,
                                                                        second.val_accuracy_ema)
    assert resumed.epoch == trainer.epoch == 2


def test_images_stay_bytes_at_their_stored_size_whatever_the_training_resolution():
    data = load_task_data(TaskConfig(subset=400, threads=1), 224, device="cpu")
    assert isinstance(data.train.images, TensorImages)
    assert data.train.images.pixels.dtype == torch.uint8 and data.train.images.pixels.shape[1:] == (1, 28, 28)
    images, labels = next(data.in_order(data.train, 16))
    assert images.shape == (16, 1, 224, 224) and images.dtype == torch.float32 and len(labels) == 16


def test_training_at_224_px_stays_under_a_memory_bound(tmp_path):
    """The 3,200 digits loaded here (2,000 train, 200 validation, 1,000 test) would take 0.64 GB as float32 at
    224 px, and the pipeline before held that and copies of it; stored as bytes they take 2.5 MB."""
    digits = mnist_idx(tmp_path / "digits", train=3000, test=1000)
    arch = tmp_path / "tiny.json"
    arch.write_text(to_json(TINY_NET))
    child = (
        "import resource, runpy, sys; sys.argv = ['scaling.train'] + sys.argv[1:]\n"
        "try:\n    runpy.run_module('scaling.train', run_name='__main__')\n"
        "finally:\n    print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", child, "--arch", str(arch), "--dataset", "idx", "--data-dir", str(digits),
         "--resolution", "224", "--val-images", "200", "--subset", "2000", "--epochs", "1", "--batch-size", "32",
         "--threads", "2", "--db", str(tmp_path / "t.db"), "--format", "json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900, env={**os.environ, "EFFNAS_DB": ""})
    assert result.returncode == 0, result.stderr
    run = json.loads(result.stdout)[0]
    assert run["resolution"] == 224 and run["epochs"] == 1
    peak_gib = int(result.stderr.split("PEAK")[-1]) / 2**20
    assert peak_gib < 1.5, f"peak resident memory {peak_gib:.2f} GiB"


def test_another_nni_version_is_refused_in_one_line_naming_both():
    check_nni_version(NNI_VERSION)
    with pytest.raises(NniVersionError) as raised:
        check_nni_version("3.1")
    message = str(raised.value)
    assert "3.1" in message and NNI_VERSION in message and "\n" not in message


def test_a_search_with_another_nni_version_stops_before_storing_anything(tmp_path):
    child = ("import sys, runpy, nni; nni.__version__ = '9.9'; sys.argv = ['nas.search'] + sys.argv[1:]\n"
             "runpy.run_module('nas.search', run_name='__main__')\n")
    db = tmp_path / "s.db"
    result = subprocess.run([sys.executable, "-c", child, "--target-flops", "8M", "--db", str(db)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, env={**os.environ, "EFFNAS_DB": ""})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "NNI 9.9" in lines[0] and f"NNI {NNI_VERSION}" in lines[0], result.stderr
    assert not Path(db).exists()


def test_float_options_refuse_nan_and_infinity(tmp_path):
    for module, args in (("scaling.train", ["--baseline", "efficientnet-b0", "--lr", "nan"]),
                         ("nas.search", ["--target-flops", "8M", "--lr", "inf"]),
                         ("scaling.train", ["--baseline", "efficientnet-b0", "--weight-decay=-inf"])):
        result = run_main(module, *args, cwd=tmp_path)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "finite number" in result.stderr


def test_running_out_of_memory_is_one_line_naming_resolution_batch_and_images(tmp_path):
    digits = mnist_idx(tmp_path / "digits", train=1000, test=200)
    db = tmp_path / "t.db"
    command = (f"ulimit -v 3000000; exec {sys.executable} -m scaling.train --baseline efficientnet-b0 --resolution 224 "
               f"--batch-size 512 --dataset idx --data-dir {digits} --subset 600 --val-images 100 --epochs 1 "
               f"--threads 1 --db {db}")
    result = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "EFFNAS_DB": ""})
    assert result.returncode == 1, result.stderr
    error = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(error) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "out of CPU memory" in error[0] and "224 px" in error[0] and "batch size 512" in error[0]
    assert "600 training images" in error[0]
    with sqlite3.connect(db) as connection:
        assert connection.execute("select status from training_runs").fetchone()[0] == "failed"
