import csv
import io
import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import NO_LATENCY, run_main
from nas.space.builder import build_model, network_layout
from nas.space.flops import count_flops, count_params, measure_params
from nas.space.search_space import SearchSpace
from nas.space.spec import decode, efficientnet_b0, from_json, named_spec, spec_from_dict, to_json
from scaling.compound import (
    DEFAULT_RULE,
    DEFAULT_RULE_BUDGET,
    DEFAULT_RULE_LABEL,
    PAPER_COEFFICIENTS,
    compound_members,
    grid_points,
    official_members,
)

# the stated band: FLOPs/B0 stays within a factor sqrt(2) of the ideal 2^phi (|log2(ratio) - phi| <= 0.5)
BAND = 0.5
TINY_ARCH = decode(["r1_k3_s11_e1_i16_o16_se0.25", "r1_k3_s22_e3_i16_o24", "r1_k3_s22_e3_i24_o32_se0.25"],
                   stem_channels=16, head_channels=64, resolution=64, num_classes=10)


def cli(module, *args, cwd, check=False):
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                            timeout=600, env={**os.environ, "EFFNAS_DB": ""})
    if check:
        assert result.returncode == 0, result.stderr
    return result


def write_tiny_arch(folder: Path) -> Path:
    path = folder / "tiny.json"
    path.write_text(to_json(TINY_ARCH))
    return path


@pytest.mark.parametrize("baseline", [efficientnet_b0(), SearchSpace(10, 1).decode(
    {label: values[i % len(values)] for i, (label, values) in enumerate(SearchSpace(10, 1).choices())})])
def test_paper_mode_flops_grow_monotonically_and_about_2_to_the_phi(baseline):
    members = compound_members(baseline, *PAPER_COEFFICIENTS, 7)
    flops = [count_flops(spec_from_dict(member.arch)) for member in members]
    assert flops == sorted(flops) and len(set(flops)) == len(flops) and flops == [m.flops for m in members]
    for member, value in zip(members, flops):
        assert abs(math.log2(value / flops[0]) - member.phi) <= BAND, (member.name, value / flops[0])
        assert member.resolution % 8 == 0 and member.flops_ratio == value / flops[0]


def test_official_mode_on_official_b0_reproduces_b1_to_b7_exactly():
    b0 = efficientnet_b0()
    for member in official_members(b0, 7):
        grown = spec_from_dict(member.arch)
        official = named_spec(f"efficientnet-b{member.phi}")
        assert member.resolution == official.resolution
        ours, theirs = network_layout(grown), network_layout(official)
        assert [len(stage) for stage in ours.stages] == [len(stage) for stage in theirs.stages]
        assert [stage[0].out_channels for stage in ours.stages] == [stage[0].out_channels for stage in theirs.stages]
        assert (ours.stem_channels, ours.head_channels) == (theirs.stem_channels, theirs.head_channels)
        assert count_params(grown) == count_params(official)
        assert count_flops(grown) == count_flops(official)
    # torchvision/timm efficientnet_b7: 66,347,960 parameters, 600x600 input
    assert official_members(b0, 7)[7].params == 66_347_960


def test_grow_prints_table_and_json_and_stores_the_family(tmp_path):
    db = tmp_path / "f.db"
    table = cli("scaling.grow", "--baseline", "efficientnet-b0", "--coefficients", "official", *NO_LATENCY, "--db", str(db),
                cwd=tmp_path, check=True)
    assert "B7" in table.stdout and "66.35M" in table.stdout and "multiply-accumulates" in table.stdout
    result = cli("scaling.grow", "--baseline", "efficientnet-b0", *NO_LATENCY, "--db", str(db), "--format", "json",
                 cwd=tmp_path, check=True)
    data = json.loads(result.stdout)
    # Neither --rule nor --coefficients: the default rule, and one line saying what it rests on.
    assert data["rule"] == DEFAULT_RULE
    assert f"default rule, {DEFAULT_RULE_LABEL}" in result.stderr and DEFAULT_RULE_BUDGET in result.stderr
    assert data["family_id"] == 2 and [m["name"] for m in data["members"]] == [f"B{i}" for i in range(8)]
    for member in data["members"]:
        for key in ("phi", "width", "depth", "resolution", "params", "flops"):
            assert isinstance(member[key], (int, float)) and not isinstance(member[key], bool)
    assert data["members"][0]["flops"] == 385_814_752
    with sqlite3.connect(db) as c:
        assert c.execute("select count(*) from family_members").fetchone()[0] == 16
        assert c.execute("select coefficient_source from families order by id").fetchall() == [
            ("official",), ("paper" if DEFAULT_RULE == "compound" else "fixed",)]


def test_grid_mode_on_a_tiny_proxy_stores_every_point_and_uses_the_best(tmp_path):
    db = tmp_path / "g.db"
    arch = write_tiny_arch(tmp_path)
    result = cli("scaling.grow", "--arch", str(arch), "--coefficients", "grid", "--grid-step", "0.2",
                 "--grid-tolerance", "0.05", "--epochs", "1", "--subset", "200", "--phi-max", "3", "--db", str(db),
                 "--format", "json", cwd=tmp_path, check=True)
    data = json.loads(result.stdout)
    expected = grid_points(0.2, 0.05)
    assert len(data["grid"]) == len(expected)
    # JSON on stdout, progress on stderr: a script's log still shows how far the grid is.
    assert f"grid point {len(expected)}/{len(expected)}: alpha" in result.stderr
    assert {(p["alpha"], p["beta"], p["gamma"]) for p in data["grid"]} == set(expected)
    best = max((p for p in data["grid"] if p["status"] == "complete"), key=lambda p: (p["val_accuracy"], -p["flops"]))
    assert (data["coefficients"]["alpha"], data["coefficients"]["beta"], data["coefficients"]["gamma"]) == (
        best["alpha"], best["beta"], best["gamma"])
    with sqlite3.connect(db) as c:
        assert c.execute("select count(*) from scaling_grid_points where accuracy is not null").fetchone()[0] == len(
            expected)


@pytest.mark.slow
def test_family_from_a_search_links_its_best_trial_and_members_can_be_evaluated(tmp_path):
    db = tmp_path / "s.db"
    cli("nas.search", "--target-flops", "400M", "--trials", "2", "--no-reference", "--epochs", "1", "--subset", "200",
        "--db", str(db), cwd=tmp_path, check=True)
    result = cli("scaling.grow", "--search", "1", "--phi-max", "2", "--evaluate", "--evaluate-max-flops", "10G",
                 *NO_LATENCY, "--db", str(db), "--format", "json", cwd=tmp_path, check=True)
    data = json.loads(result.stdout)
    with sqlite3.connect(db) as c:
        best_id = c.execute("select id from trials where status='complete' order by reward desc, number limit 1"
                            ).fetchone()[0]
        assert c.execute("select baseline_trial_id from families").fetchone()[0] == best_id
    assert all(0.0 <= m["proxy_accuracy"] <= 1.0 for m in data["members"])


@pytest.mark.slow
def test_export_round_trip_json_onnx_program_torchscript(tmp_path):
    import onnxruntime as ort

    db = tmp_path / "e.db"
    arch = write_tiny_arch(tmp_path)
    grown = json.loads(cli("scaling.grow", "--arch", str(arch), "--phi-max", "2", "--db", str(db), "--format", "json",
                           cwd=tmp_path, check=True).stdout)
    out = tmp_path / "family"
    cli("scaling.export", "--family", str(grown["family_id"]), "--out", str(out), "--files",
        "json,onnx,pt2,torchscript", "--db", str(db), cwd=tmp_path, check=True)
    manifest = json.loads((out / "family.json").read_text())
    assert [m["name"] for m in manifest["members"]] == ["B0", "B1", "B2"]
    for member in manifest["members"]:
        name = member["name"].lower()
        spec = from_json((out / f"{name}.json").read_text())
        model = build_model(spec).eval()
        assert measure_params(model) == member["params"] and count_flops(spec) == member["flops"]
        assert member["tf"]["blocks_args"] == spec.block_strings()
        x = torch.randn(2, spec.in_channels, spec.resolution, spec.resolution)
        # the exported files carry their own weights: compare them with each other, both against the same input
        session = ort.InferenceSession(str(out / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        onnx_out = session.run(None, {"image": x.numpy()})[0]
        scripted = torch.jit.load(str(out / f"{name}.torchscript.pt")).eval()
        program = torch.export.load(str(out / f"{name}.pt2")).module()
        with torch.no_grad():
            torch_out, program_out = scripted(x).numpy(), program(x).numpy()
        assert onnx_out.shape == (2, spec.num_classes) and not member["trained"]
        np.testing.assert_allclose(onnx_out, torch_out, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(program_out, torch_out, rtol=1e-4, atol=1e-5)
    again = cli("scaling.export", "--family", str(grown["family_id"]), "--out", str(out), "--db", str(db),
                cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr
    forced = cli("scaling.export", "--family", str(grown["family_id"]), "--out", str(out), "--db", str(db),
                 "--files", "json", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr


def test_onnx_matches_pytorch_on_the_same_weights(tmp_path):
    import onnxruntime as ort

    from scaling.model_files import write_onnx

    spec = TINY_ARCH
    model = build_model(spec).eval()
    write_onnx(model, torch.zeros(2, spec.in_channels, spec.resolution, spec.resolution), tmp_path / "b0.onnx",
               {"member": "B0"})
    x = torch.randn(3, spec.in_channels, spec.resolution, spec.resolution)
    with torch.no_grad():
        expected = model(x).numpy()
    got = ort.InferenceSession(str(tmp_path / "b0.onnx"), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--family", "99", "--out", "x"], "no family with id 99"),
        (["--family", "1", "--out", "x", "--files", "pdf"], "unknown file format"),
        (["--family", "1", "--out", "afile/sub"], "is a file"),
    ],
)
def test_export_bad_input_exit_2(tmp_path, args, message):
    db = tmp_path / "b.db"
    assert run_main("scaling.grow", "--baseline", "efficientnet-b0", "--phi-max", "1", *NO_LATENCY, "--db", str(db),
                    cwd=tmp_path).returncode == 0
    (tmp_path / "afile").write_text("")
    result = run_main("scaling.export", *args, "--db", str(db), cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "exactly one baseline"),
        (["--baseline", "efficientnet-b0", "--coefficients", "magic"], "invalid choice"),
        (["--baseline", "resnet-50"], "unknown architecture name"),
        (["--arch", "missing.json"], "cannot read"),
        (["--search", "3"], "does not exist"),
        (["--baseline", "efficientnet-b0", "--coefficients", "official", "--phi-max", "9"], "up to 7 (B7)"),
    ],
)
def test_grow_bad_input_exit_2_and_no_database(tmp_path, args, message):
    result = run_main("scaling.grow", *args, "--db", str(tmp_path / "none.db"), cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "none.db").exists()


def test_python_m_scaling_grow_ends_bad_input_in_one_line_and_exit_2(tmp_path):
    result = cli("scaling.grow", "--phi-max", "1", "--db", str(tmp_path / "none.db"), cwd=tmp_path)
    assert result.returncode == 2 and "exactly one baseline" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "none.db").exists()


@pytest.mark.slow
def test_search_export_json_and_csv(tmp_path):
    db = tmp_path / "x.db"
    cli("nas.search", "--target-flops", "400M", "--trials", "2", "--epochs", "1", "--subset", "200", "--db", str(db),
        cwd=tmp_path, check=True)
    data = json.loads(cli("nas.export", "--search", "1", "--db", str(db), cwd=tmp_path, check=True).stdout)
    assert data["search"]["config"]["target_flops"] == 400_000_000
    assert len(data["trials"]) == 3  # two candidates and the B0 reference
    for trial in data["trials"]:
        assert trial["status"] in ("running", "complete", "failed", "rejected")
        assert {"accuracy", "flops", "params", "reward", "block_strings"} <= set(trial)
        assert len(trial["block_strings"]) == 7
    out = tmp_path / "t.csv"
    cli("nas.export", "--search", "1", "--format", "csv", "--out", str(out), "--db", str(db), cwd=tmp_path, check=True)
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [int(r["flops"]) for r in rows] == [t["flops"] for t in data["trials"]]
    for args in (["--search", "9"], ["--search", "1", "--format", "xml"], ["--search", "1", "--out", str(out)]):
        bad = cli("nas.export", *args, "--db", str(db), cwd=tmp_path)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_grow_measures_each_member_at_batch_1_and_32_and_says_on_what(tmp_path):
    db = tmp_path / "l.db"
    arch = write_tiny_arch(tmp_path)
    table = cli("scaling.grow", "--arch", str(arch), "--phi-max", "2", "--latency-max-flops", "8M", "--db", str(db),
                cwd=tmp_path, check=True).stdout
    assert "ms, batch 1" in table and "measured here on PyTorch eager" in table and "1 thread" in table
    cli("scaling.export", "--family", "1", "--out", str(tmp_path / "out"), "--files", "json", "--db", str(db),
        cwd=tmp_path, check=True)
    members = json.loads((tmp_path / "out" / "family.json").read_text())["members"]
    measured = [m for m in members if m["latency"]]
    assert measured and all(m["flops"] <= 8e6 for m in measured)
    assert all(m["latency"] is None for m in members if m["flops"] > 8e6)
    for m in measured:
        assert 0 < m["latency"]["batch_1_ms"] < m["latency"]["batch_32_ms"]
        assert m["latency"]["measured_on"]["runtime"] == "eager" and m["latency"]["measured_on"]["cpu"]
        assert m["contract"]["latency"] == m["latency"]
    none = json.loads(cli("scaling.grow", "--arch", str(arch), "--phi-max", "1", "--latency-runtime", "none",
                          "--format", "json", "--db", str(db), cwd=tmp_path, check=True).stdout)
    assert all(m["latency"] is None for m in none["members"])
