"""A trained family exported as a user takes it away: ONNX and torch.export programs that run without effnas and
carry their contract, safetensors weights, an int8 model, a model card, the loader, and refusals that leave
nothing behind."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import mnist_idx, stored_runs
from nas.space.spec import decode, to_json
from nas.training.config import TaskConfig
from nas.training.data import load_task_data
from scaling.compound import DEFAULT_RULE

SMALL = decode(["r1_k3_s11_e1_i16_o16", "r1_k3_s22_e3_i16_o24_se0.25", "r1_k3_s22_e3_i24_o32"],
               stem_channels=16, head_channels=64, resolution=32, num_classes=10)
SEEDS = (0, 1)


def cli(module, *args, cwd):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "EFFNAS_DB": ""})


def ok(result):
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A family of B0 and B1 grown from a small network; B0 trained with two seeds on 2,000 digits, B1 untrained;
    exported with int8."""
    folder = tmp_path_factory.mktemp("export")
    data = mnist_idx(folder / "mnist", train=2500, test=600)
    arch = folder / "small.json"
    arch.write_text(to_json(SMALL))
    db = folder / "e.db"
    grown = ok(cli("scaling.grow", "--arch", str(arch), "--phi-max", "1", "--db", str(db), "--format", "json",
                   cwd=folder))
    family = json.loads(grown.stdout)["family_id"]
    ok(cli("scaling.train", "--family", str(family), "--members", "B0", "--seeds", ",".join(map(str, SEEDS)),
           "--dataset", "idx", "--data-dir", str(data), "--subset", "2000", "--val-images", "300", "--epochs", "3",
           "--batch-size", "64", "--lr", "0.2", "--weight-decay", "1e-4", "--threads", "2", "--db", str(db),
           cwd=folder))
    out = folder / "family"
    result = ok(cli("scaling.export", "--family", str(family), "--out", str(out), "--quantize", "int8", "--db",
                    str(db), cwd=folder))
    test = load_task_data(TaskConfig(dataset="idx", data_dir=str(data)), 32, test=True, val_images=300)
    pixels, labels = next(test.pixel_batches(test.test, 100))
    return {"folder": folder, "data": data, "db": db, "family": family, "out": out, "stderr": result.stderr,
            "manifest": json.loads((out / "family.json").read_text()), "pixels": pixels.numpy(),
            "labels": labels.numpy(), "runs": stored_runs(db, complete_only=True)}


def exported_run_logits(exported, pixels):
    """The logits of the run the export chose (highest validation accuracy), computed by effnas in this process."""
    from nas.training.weights import load_weights

    b0 = exported["manifest"]["members"][0]
    run = next(r for r in exported["runs"] if r["id"] == b0["run_id"])
    assert run["val_accuracy"] == max(r["val_accuracy"] for r in exported["runs"])
    with torch.no_grad():
        return load_weights(run["weights_path"], run["weights_sha256"]).model()(torch.from_numpy(pixels)).numpy()


def test_the_folder_holds_each_format_and_the_manifest_records_their_checksums(exported):
    out, manifest = exported["out"], exported["manifest"]
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "b0.int8.onnx", "b0.json", "b0.onnx", "b0.pt2", "b0.safetensors", "b1.json", "b1.onnx",
        "b1.pt2", "family.json"]
    b0, b1 = manifest["members"]
    assert b0["trained"] and not b1["trained"] and "safetensors" not in b1["files"] and "int8" not in b1["files"]
    from nas.training.weights import sha256_of

    assert {name: sha256_of(out / name) for name in b0["files"].values()} == b0["sha256"]
    assert b1["contract"]["accuracy"] is None and b1["test_accuracy"] is None
    assert "exported B0 (1/2)" in exported["stderr"] and "exported B1 (2/2)" in exported["stderr"]


def test_onnx_runs_with_only_onnxruntime_and_numpy_and_gives_the_trained_predictions(exported, tmp_path):
    """A Python that sees only onnxruntime, numpy and what they import: no torch, no effnas."""
    import numpy
    import onnxruntime

    visible = tmp_path / "site"
    visible.mkdir()
    site = Path(onnxruntime.__file__).parents[1]
    for pattern in ("onnxruntime", "numpy", "numpy.libs", "google", "flatbuffers", "packaging", "coloredlogs",
                    "humanfriendly", "sympy", "mpmath"):
        for path in site.glob(pattern):
            (visible / path.name).symlink_to(path)
    assert Path(numpy.__file__).parents[1] == site
    np.save(tmp_path / "pixels.npy", exported["pixels"])
    script = f"""
import sys
sys.path.insert(0, {str(visible)!r})
import json, numpy as np, onnxruntime as ort
session = ort.InferenceSession({str(exported["out"] / "b0.onnx")!r}, providers=["CPUExecutionProvider"])
np.save({str(tmp_path / "logits.npy")!r}, session.run(None, {{"image": np.load({str(tmp_path / "pixels.npy")!r})}})[0])
print(json.dumps({{"metadata": session.get_modelmeta().custom_metadata_map,
                  "torch": "torch" in sys.modules, "effnas": any(m.split(".")[0] in ("effnas", "nas", "scaling") for m in sys.modules)}}))
"""
    result = subprocess.run([sys.executable, "-I", "-S", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert not report["torch"] and not report["effnas"]
    logits = np.load(tmp_path / "logits.npy")
    expected = exported_run_logits(exported, exported["pixels"])
    assert (logits.argmax(1) == expected.argmax(1)).all()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    contract = {key[len("effnas."):]: json.loads(value) for key, value in report["metadata"].items()}
    assert contract == exported["manifest"]["members"][0]["contract"]
    assert contract["input"]["shape"] == ["N", 1, 32, 32] and contract["input"]["normalisation"]["inside_graph"]
    assert contract["classes"] == [str(i) for i in range(10)]
    assert "multiply-accumulates" in contract["architecture"]["flops_convention"]


def test_the_program_loads_with_torch_alone_and_carries_its_contract(exported, tmp_path):
    np.save(tmp_path / "pixels.npy", exported["pixels"])
    script = f"""
import json, sys, numpy as np, torch
extra = {{"contract.json": ""}}
program = torch.export.load({str(exported["out"] / "b0.pt2")!r}, extra_files=extra)
logits = program.module()(torch.from_numpy(np.load({str(tmp_path / "pixels.npy")!r})))
np.save({str(tmp_path / "logits.npy")!r}, logits.detach().numpy())
one = program.module()(torch.from_numpy(np.load({str(tmp_path / "pixels.npy")!r}))[:1])
print(json.dumps({{"contract": json.loads(extra["contract.json"]), "one": list(one.shape),
                  "effnas": any(m.split(".")[0] in ("effnas", "nas", "scaling") for m in sys.modules)}}))
"""
    result = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert not report["effnas"] and report["one"] == [1, 10]
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), exported_run_logits(exported, exported["pixels"]),
                               rtol=1e-4, atol=1e-4)
    assert report["contract"] == exported["manifest"]["members"][0]["contract"]


def test_the_contract_gives_accuracy_over_both_seeds_as_the_database_has_it(exported):
    contract = exported["manifest"]["members"][0]["contract"]
    runs = exported["runs"]
    accuracies = [r["test_accuracy"] for r in runs]
    test = contract["accuracy"]["test"]
    assert test["seeds"] == list(SEEDS) and test["run_ids"] == [r["id"] for r in runs]
    assert test["mean"] == pytest.approx(np.mean(accuracies)) and test["sd"] == pytest.approx(np.std(accuracies, ddof=1))
    assert contract["recipe"]["epochs"] == 3 and "seed" not in contract["recipe"]
    assert contract["family"]["rule"] == DEFAULT_RULE and contract["baseline"]["kind"] == "file"
    assert contract["data"]["train_images"] == 2000 and contract["data"]["budget"] == "2,000 training images x 3 epochs"
    assert contract["effnas_version"] not in ("", None)


def test_int8_is_measured_beside_float_on_the_test_split(exported):
    b0 = exported["manifest"]["members"][0]
    int8 = b0["int8"]
    run = next(r for r in exported["runs"] if r["id"] == b0["run_id"])
    # The float ONNX model on the same test images gives the run's own test accuracy: same weights, same input.
    assert int8["float_test_accuracy"] == pytest.approx(run["test_accuracy"], abs=0.002)
    assert int8["test_images"] == 600 and abs(int8["test_accuracy"] - int8["float_test_accuracy"]) <= 0.03
    assert int8["bytes"] < int8["float_bytes"] and int8["bytes"] == (exported["out"] / "b0.int8.onnx").stat().st_size
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported["out"] / "b0.int8.onnx"), providers=["CPUExecutionProvider"])
    predictions = session.run(None, {"image": exported["pixels"]})[0].argmax(1)
    assert (predictions == exported["labels"]).mean() > 0.5  # chance is 0.1
    assert "effnas.accuracy" in session.get_modelmeta().custom_metadata_map


def test_the_model_card_lists_trained_members_only_with_the_databases_figures(exported):
    from huggingface_hub import ModelCard

    card = ModelCard.load(exported["out"] / "README.md")
    [result] = card.data.eval_results
    accuracies = [r["test_accuracy"] for r in exported["runs"]]
    assert result.metric_type == "accuracy" and result.dataset_split == "test"
    assert result.metric_value == pytest.approx(np.mean(accuracies), abs=1e-6)
    assert result.metric_args["member"] == "B0" and result.metric_args["seeds"] == list(SEEDS)
    text = card.text
    assert "| B1 |" in text and "untrained" in text.split("| B1 |")[1].splitlines()[0]
    assert 'ort.InferenceSession("b0.onnx")' in text and 'torch.export.load("b0.pt2")' in text
    assert "upsampled" in text or "resized" in text
    assert "(2,000 training images x 3 epochs, 300 of the training files held out" in text


def test_load_member_and_predict_serve_the_export_folder(exported, tmp_path):
    from PIL import Image

    import effnas

    network = effnas.load_member(exported["out"], "b0")
    with torch.no_grad():
        logits = network(torch.from_numpy(exported["pixels"])).numpy()
    np.testing.assert_allclose(logits, exported_run_logits(exported, exported["pixels"]), rtol=1e-5, atol=1e-5)
    files = []
    for index in range(5):
        path = tmp_path / f"digit{index}.png"
        Image.fromarray((exported["pixels"][index, 0] * 255).round().astype(np.uint8)).save(path)
        files.append(str(path))
    result = ok(cli("scaling.predict", "--export", str(exported["out"]), "--member", "B0", *files, "--format",
                    "json", cwd=tmp_path))
    top = [int(p["predictions"][0]["label"]) for p in json.loads(result.stdout)["results"]]
    assert top == [int(i) for i in logits[:5].argmax(1)]


def in_process(main, *argv, capsys):
    """A command run in this process (its imports already paid for): exit code and stderr."""
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    return exited.value.code, capsys.readouterr().err


def test_an_export_folder_that_exists_is_refused_without_force(exported, capsys):
    from scaling.export import main

    before = {p.name: p.stat().st_mtime_ns for p in exported["out"].iterdir()}
    code, stderr = in_process(main, "--family", str(exported["family"]), "--out", str(exported["out"]), "--db",
                              str(exported["db"]), capsys=capsys)
    assert code == 2 and "--force" in stderr and len(stderr.strip().splitlines()) == 1
    assert {p.name: p.stat().st_mtime_ns for p in exported["out"].iterdir()} == before


@pytest.mark.parametrize("args,message", [
    (["--quantize", "int8", "--members", "B1"], "B1 is untrained"),
    (["--quantize", "int8", "--files", "json,pt2"], "keep onnx in --files"),
    (["--members", "B5"], "has no member B5"),
])
def test_bad_export_options_exit_2_and_write_nothing(exported, tmp_path, capsys, args, message):
    from scaling.export import main

    out = tmp_path / "new"
    code, stderr = in_process(main, "--family", str(exported["family"]), "--out", str(out), *args, "--db",
                              str(exported["db"]), capsys=capsys)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_a_weights_file_gone_missing_fails_the_export_and_leaves_no_folder(exported, tmp_path):
    b0 = exported["manifest"]["members"][0]
    weights = Path(next(r for r in exported["runs"] if r["id"] == b0["run_id"])["weights_path"])
    moved = weights.with_name("moved-away")
    weights.rename(moved)
    try:
        result = cli("scaling.export", "--family", str(exported["family"]), "--out", str(tmp_path / "new"), "--db",
                     str(exported["db"]), cwd=tmp_path)
    finally:
        moved.rename(weights)
    assert result.returncode == 1 and "is missing" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("damage,member,message", [
    (None, "B5", "has no member B5"),
    (None, "B1", "B1 is untrained"),
    ("b0.safetensors", "B0", "does not match the SHA-256"),
    ("family.json", "B0", "cannot read"),
])
def test_a_folder_without_the_member_or_with_a_changed_file_is_one_line(exported, tmp_path, capsys, damage, member,
                                                                         message):
    from PIL import Image

    from scaling.exported import ExportFolderError, load_member
    from scaling.predict import main

    folder = tmp_path / "copy"
    shutil.copytree(exported["out"], folder)
    if damage is not None:
        with (folder / damage).open("r+b") as handle:
            handle.seek(100)
            handle.write(b"\x00garbage")
    with pytest.raises(ExportFolderError, match=message):
        load_member(folder, member)
    image = tmp_path / "x.png"
    Image.new("L", (28, 28)).save(image)
    code, stderr = in_process(main, "--export", str(folder), "--member", member, str(image), capsys=capsys)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1
