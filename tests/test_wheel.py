"""The package as a wheel: built from the checkout, installed into a fresh virtual environment, and run outside the
repository through the whole pipeline (search, grow, train, export, predict on the export)."""

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest

from helpers import mnist_idx

ROOT = Path(__file__).resolve().parents[1]
# Files the package reads at run time that are not Python modules.
DATA_FILES = ("nas/search/nni_manager_preload.js", "nas/search/remote_check.js", "db/migrations/env.py",
              "db/migrations/script.py.mako")


def run(python, *args, cwd, env):
    result = subprocess.run([str(python), *args], cwd=cwd, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, f"{' '.join(map(str, args))}:\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_venv_and_runs_the_pipeline_outside_the_repository(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(dist)], check=True, capture_output=True, timeout=600)
    [wheel] = dist.glob("effnas-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert all(name in names for name in DATA_FILES), sorted(set(DATA_FILES) - names)
    assert not any(name.startswith(("tests/", "bench/", "docs/")) for name in names)

    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # Dependencies come from this environment, appended to the path as a plain folder: its own .pth files (the
    # checkout's editable install among them) are not processed, so effnas can come only from the wheel.
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "EFFNAS_DB")}
    run(python, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel), cwd=work, env=env)
    where = run(python, "-c", "import effnas, nas, scaling; print(effnas.__file__, nas.__file__, scaling.__file__)",
                cwd=work, env=env).stdout.split()
    assert all(Path(path).is_relative_to(site) for path in where), where
    assert run(python, "-m", "pip", "check", cwd=work, env=env).returncode == 0

    data = mnist_idx(work / "digits", train=1200, test=300)
    db = ["--db", str(work / "w.db")]
    run(python, "-m", "nas.search", "--target-flops", "8M", "--resolution", "32", "--dataset", "idx", "--data-dir",
        str(data), "--subset", "600", "--trials", "2", "--epochs", "1", "--no-reference", "--threads", "2", *db,
        cwd=work, env=env)
    run(python, "-m", "scaling.grow", "--search", "1", "--phi-max", "1", *db, cwd=work, env=env)
    run(python, "-m", "scaling.train", "--family", "1", "--members", "B0", "--dataset", "idx", "--data-dir",
        str(data), "--subset", "600", "--val-images", "200", "--epochs", "1", "--threads", "2", *db, cwd=work,
        env=env)
    run(python, "-m", "scaling.export", "--family", "1", "--out", str(work / "family"), *db, cwd=work, env=env)
    from PIL import Image

    image = work / "digit.png"
    Image.fromarray(np.full((28, 28), 200, dtype=np.uint8)).save(image)
    predicted = run(python, "-m", "scaling.predict", "--export", str(work / "family"), "--member", "B0", str(image),
                    "--format", "json", cwd=work, env=env)
    [result] = json.loads(predicted.stdout)["results"]
    assert len(result["predictions"]) == 3 and 0 <= result["predictions"][0]["probability"] <= 1
