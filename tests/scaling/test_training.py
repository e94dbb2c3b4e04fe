"""Final training: real data with a test split, scaling.train, resume, trained exports, predictions."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import mnist_idx, run_main, shuffled_digits
from nas.space.spec import decode, to_json
from nas.training.config import DataError, TaskConfig, TrainingRecipe
from nas.training.data import load_task_data
from scaling.training_run import Job, QueueDisplay

# A small network that learns digits in a few hundred steps on 2 cores.
SMALL = decode(["r1_k3_s11_e1_i16_o16", "r1_k3_s22_e3_i16_o24_se0.25", "r1_k3_s22_e3_i24_o32"],
               stem_channels=16, head_channels=64, resolution=32, num_classes=10)


def cli(module, *args, cwd, timeout=600):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "EFFNAS_DB": ""})


def runs(db):
    with sqlite3.connect(db) as c:
        c.row_factory = sqlite3.Row
        return [dict(r) for r in c.execute("select * from training_runs order by id")]


def table_dump(db):
    with sqlite3.connect(db) as c:
        return {table: c.execute(f"select * from {table}").fetchall()
                for (table,) in c.execute("select name from sqlite_master where type='table'")}


@pytest.mark.parametrize("compress", [True, False])
def test_idx_files_load_with_their_own_test_split(tmp_path, compress):
    folder = mnist_idx(tmp_path / "idx", compress=compress)
    data = load_task_data(TaskConfig(dataset="idx", data_dir=str(folder)), 32, val_images=500, test=True)
    assert (len(data.train), len(data.val), len(data.test)) == (2500, 500, 1000)
    assert data.in_channels == 1 and data.resolution == 32 and data.num_classes == 10
    # Normalised with the training statistics: the training split has mean 0, the test split close to it.
    train = torch.cat([images for images, _ in data.in_order(data.train, 500)])
    test = torch.cat([images for images, _ in data.in_order(data.test, 500)])
    assert abs(float(train.mean())) < 1e-3 and abs(float(test.mean())) < 0.1


def test_a_broken_idx_file_is_one_clear_error(tmp_path):
    folder = mnist_idx(tmp_path / "idx", compress=False)
    (folder / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")
    with pytest.raises(DataError, match="header says 5"):
        load_task_data(TaskConfig(dataset="idx", data_dir=str(folder)), 32)


def test_a_run_logged_to_a_file_says_within_each_epoch_where_it_stands(tmp_path, capsys):
    """Where no terminal draws the bar (a log, as under nohup), a line comes about every minute, not only after
    an epoch that takes 14 minutes on 2 cores at the medium budget."""
    now = [0.0]
    job = Job(run_id=1, spec=SMALL, data=load_task_data(TaskConfig(subset=100), 32), recipe=TrainingRecipe(epochs=3),
              label="B0 of family 1", resume=False, out_dir=tmp_path)
    display = QueueDisplay([job], clock=lambda: now[0])
    display.start(0, epochs_done=1)
    for step in range(1, 101):  # 1.5 s a step
        now[0] = step * 1.5
        display.step(step, 100, 0.5)
    lines = capsys.readouterr().err.splitlines()
    # After 60 s (step 41, 59 steps left) and 120 s (step 81); then one epoch of 100 steps is left after this one.
    assert lines == [
        "[1/1] B0 of family 1, seed 0: epoch 2/3, step 41/100, loss 0.5000, ~1m28s left in this epoch, "
        "~3m58s left for this run",
        "[1/1] B0 of family 1, seed 0: epoch 2/3, step 81/100, loss 0.5000, ~28s left in this epoch, "
        "~2m58s left for this run",
    ]


def test_a_search_never_reads_the_test_split(tmp_path):
    """The test files here are not IDX files at all: a search that opened them would fail."""
    folder = mnist_idx(tmp_path / "idx", train=600, compress=False, test_split=False)
    (folder / "t10k-images-idx3-ubyte").write_bytes(b"the test split must never be read")
    (folder / "t10k-labels-idx1-ubyte").write_bytes(b"the test split must never be read")
    with pytest.raises(DataError):
        load_task_data(TaskConfig(dataset="idx", data_dir=str(folder)), 32, val_images=100, test=True)
    result = cli("nas.search", "--db", str(tmp_path / "s.db"), "--target-flops", "8M", "--resolution", "32",
                 "--dataset", "idx", "--data-dir", str(folder), "--trials", "2", "--no-reference", "--epochs", "1",
                 "--threads", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "s.db") as c:
        statuses = [s for (s,) in c.execute("select status from trials")]
    # A candidate over the FLOPs cap is rejected untrained; every other one trained on the folder's training files.
    assert "complete" in statuses and set(statuses) <= {"complete", "rejected"}, statuses


def train_command(db, arch, *extra):
    return ("scaling.train", "--arch", str(arch), "--dataset", "idx", "--threads", "1", "--val-images", "300",
            "--db", str(db), *extra)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real training run of a small network on 2,700 MNIST digits (4 short epochs), stored."""
    folder = tmp_path_factory.mktemp("trained")
    data = mnist_idx(folder / "mnist")
    arch = folder / "small.json"
    arch.write_text(to_json(SMALL))
    db = folder / "t.db"
    result = cli(*train_command(db, arch, "--data-dir", str(data), "--subset", "2700", "--epochs", "4", "--batch-size",
                                "64", "--lr", "0.2", "--weight-decay", "1e-4", "--format", "json"), cwd=folder)
    assert result.returncode == 0, result.stderr
    return {"folder": folder, "data": data, "arch": arch, "db": db, "result": json.loads(result.stdout),
            "stderr": result.stderr}


def test_training_reaches_accuracy_far_above_chance_and_stores_the_run(trained):
    [result] = trained["result"]
    assert result["test_accuracy"] > 0.7 and result["val_accuracy"] > 0.7  # chance is 0.1
    assert result["recipe"]["weight_decay"] == 1e-4 and result["block_strings"] == " ".join(SMALL.block_strings())
    assert f"Training run {result['run_id']}" in trained["stderr"].splitlines()[0]
    [run] = runs(trained["db"])
    assert run["status"] == "complete" and run["epochs_done"] == 4 and run["dataset"] == "idx"
    curve = json.loads(run["curve"])
    assert [p["epoch"] for p in curve] == [1, 2, 3, 4] and all(p["images_per_second"] > 0 for p in curve)
    assert json.loads(run["recipe"])["label_smoothing"] == 0.1 and run["chosen_weights"] in ("raw", "ema")
    assert Path(run["weights_path"]).is_file() and len(run["weights_sha256"]) == 64
    assert run["resolution"] == 32 and run["flops"] > 0 and run["params"] > 0


@pytest.mark.slow
def test_resume_continues_from_the_checkpoint_moved_elsewhere_to_the_uninterrupted_result(trained, tmp_path):
    db = tmp_path / "r.db"
    command = train_command(db, trained["arch"], "--data-dir", str(trained["data"]), "--subset", "1500",
                            "--epochs", "4", "--out-dir", str(tmp_path / "runs"))
    proc = subprocess.Popen([sys.executable, "-m", *command], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "EFFNAS_DB": ""})
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            assert proc.poll() is None, "the training ended before it could be killed"
            time.sleep(0.2)
            try:
                done = runs(db)[0]["epochs_done"] if db.exists() and runs(db) else 0
            except sqlite3.OperationalError:
                continue
            if done >= 1:
                proc.send_signal(signal.SIGSTOP)
                break
    finally:
        proc.kill()
        proc.wait()
    [killed] = runs(db)
    assert killed["status"] == "running" and 1 <= killed["epochs_done"] < 4
    # Continued elsewhere: the runs folder moved, as to another machine, and --out-dir says where it is now.
    (tmp_path / "runs").rename(tmp_path / "moved")
    lost = cli("scaling.train", "--resume", str(killed["id"]), "--db", str(db), cwd=tmp_path)
    assert lost.returncode == 2 and f"the checkpoint of run {killed['id']} is gone" in lost.stderr
    assert "Traceback" not in lost.stderr and runs(db) == [killed]
    resumed = cli("scaling.train", "--resume", str(killed["id"]), "--db", str(db), "--format", "json",
                  "--out-dir", str(tmp_path / "moved"), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert (tmp_path / "moved" / f"run-{killed['id']}" / "weights.pt").is_file()
    assert f"continuing after epoch {killed['epochs_done']}" in resumed.stderr
    [after] = runs(db)
    curve = json.loads(after["curve"])
    assert [p["epoch"] for p in curve] == [1, 2, 3, 4]
    assert curve[:killed["epochs_done"]] == json.loads(killed["curve"])  # kept, not trained again
    straight_db = tmp_path / "straight.db"
    straight = cli(*train_command(straight_db, trained["arch"], "--data-dir", str(trained["data"]), "--subset",
                                  "1500", "--epochs", "4", "--out-dir", str(tmp_path / "straight")), cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr
    [reference] = runs(straight_db)
    uninterrupted = json.loads(reference["curve"])
    strip = [{k: v for k, v in p.items() if k not in ("seconds", "images_per_second")} for p in curve]
    assert strip == [{k: v for k, v in p.items() if k not in ("seconds", "images_per_second")} for p in uninterrupted]
    assert after["test_accuracy"] == reference["test_accuracy"]


def test_predict_classifies_image_files_with_a_trained_run(trained, tmp_path):
    from PIL import Image

    images, labels = shuffled_digits()
    files = []
    for index in range(4000, 4020):
        path = tmp_path / f"digit{index}.png"
        Image.fromarray(images[index, 0].astype(np.uint8)).save(path)
        files.append(str(path))
    [run] = runs(trained["db"])[:1]
    result = cli("scaling.predict", "--run", str(run["id"]), *files, "--format", "json", "--db", str(trained["db"]),
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    predictions = json.loads(result.stdout)["results"]
    top = [int(p["predictions"][0]["label"]) for p in predictions]
    assert sum(t == int(y) for t, y in zip(top, labels[4000:4020])) >= 12  # chance would be 2 of 20
    assert all(p["predictions"][0]["probability"] >= p["predictions"][1]["probability"] for p in predictions)


@pytest.mark.parametrize("args,message", [
    (["--family", "99"], "no family with id 99"),
    (["--baseline", "efficientnet-b9"], "efficientnet-b9"),
    (["--baseline", "efficientnet-b0", "--max-flops", "1M", "--resolution", "32"], "over --max-flops"),
    (["--baseline", "efficientnet-b0", "--dataset", "idx", "--data-dir", "/nonexistent"], "does not exist"),
    (["--resume", "42"], "no training run with id 42"),
    (["--baseline", "efficientnet-b0", "--weight-decay", "-1"], "--weight-decay must be 0 or more"),
    (["--baseline", "efficientnet-b0", "--dataset", "mnist", "--resolution", "32"], "no test split"),
])
def test_bad_input_exit_2_and_leaves_the_database_as_it_was(trained, tmp_path, args, message):
    db = trained["db"]
    before = table_dump(db)
    result = run_main("scaling.train", *args, "--db", str(db), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr
    assert table_dump(db) == before


def test_a_family_member_that_does_not_exist_is_named(trained, tmp_path):
    db = trained["db"]
    grown = cli("scaling.grow", "--arch", str(trained["arch"]), "--phi-max", "1", "--db", str(db), "--format", "json",
                cwd=tmp_path)
    family = json.loads(grown.stdout)["family_id"]
    before = table_dump(db)
    result = cli("scaling.train", "--family", str(family), "--members", "B0,B5", "--dataset", "idx", "--data-dir",
                 str(trained["data"]), "--db", str(db), cwd=tmp_path)
    assert result.returncode == 2 and "has no member B5" in result.stderr
    assert table_dump(db) == before
