"""Peak resident memory and images/s of final training, per case, with the whole data set loaded.

Run: .venv/bin/python bench/training_memory.py [--cases fashion224,fashion224-20k,fashion32,folder224] [--force]
Each case runs in a fresh child process (so its peak is its own): load the task's train, validation and test
splits as `python -m scaling.train` does, build EfficientNet-B0 with the final-training recipe, train a fixed
number of steps (a whole epoch at 224 px takes about an hour on 2 cores) and report the process's peak resident
memory (decoding workers counted apart) and images/s over the steps after the first. Finished cases are kept
in bench/training_memory.json and skipped on a rerun unless --force. `before` holds the same measurement of the
pipeline before the one-engine change (commit c81a776, which resized and normalised every image up front as
float32), at sizes it survived.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from bench_json import default_path, write_json

FOLDER = Path(".effnas") / "bench" / "rgb-folder-224"
FOLDER_FILES = 3000
CASES = {
    # name: (dataset, resolution, training images (None: all), batch size, steps)
    "fashion224": ("fashion-mnist", 224, None, 32, 10),
    "fashion224-20k": ("fashion-mnist", 224, 20_000, 32, 10),
    "fashion32": ("fashion-mnist", 32, None, 128, 30),
    "folder224": ("imagefolder", 224, None, 32, 10),
}
BEFORE = {
    "commit": "c81a776",
    "how": "the same steps through the pipeline of that commit (load_final_data + Trainer), 2 threads",
    "cases": {
        "fashion224-5k": {"resolution": 224, "train_images": 5000, "images_loaded": 20000, "batch_size": 32,
                          "peak_rss_gib": 9.85, "images_per_second": 13.95},
        "fashion224-10k": {"resolution": 224, "train_images": 10000, "images_loaded": 25000, "batch_size": 32,
                           "peak_rss_gib": 11.74},
        "fashion32": {"resolution": 32, "train_images": 55000, "images_loaded": 70000, "batch_size": 128,
                      "peak_rss_gib": 1.18, "images_per_second": 457.8},
        # Its images/s (6.7) was measured beside a test run, so it is left out.
        "folder224": {"resolution": 224, "train_images": 3000, "images_loaded": 3300, "batch_size": 32,
                      "peak_rss_gib": 7.03},
    },
    "note": "fashion224 with all 60k images was killed by the kernel at 22.9 GB (issue 20); with 20,000 training "
            "images it peaked at 15.4 GiB before the first step",
}

CHILD = """
import json, resource, sys, time
from dataclasses import replace
import torch
from nas.space.spec import named_spec
from nas.training.config import TaskConfig, TrainingRecipe
from nas.training.data import load_task_data
from nas.training.engine import Trainer

dataset, data_dir, resolution, subset, batch, steps = sys.argv[1], sys.argv[2] or None, *map(int, sys.argv[3:4]), \\
    (int(sys.argv[4]) or None), int(sys.argv[5]), int(sys.argv[6])
start = time.perf_counter()
data = load_task_data(TaskConfig(dataset=dataset, data_dir=data_dir, threads=2), resolution, subset=subset,
                      val_images=5000 if dataset != "imagefolder" else 300, test=True, device="cpu")
load_seconds = time.perf_counter() - start
trainer = Trainer(replace(named_spec("efficientnet-b0"), resolution=resolution), data,
                  TrainingRecipe(batch_size=batch, flip=True))
stamps = []

class Enough(Exception):
    pass

def step(done, total, loss):
    stamps.append(time.perf_counter())
    if done == steps:
        raise Enough

try:
    trainer.train_epoch(step)
except Enough:
    pass
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
print(json.dumps({"resolution": resolution, "train_images": len(data.train),
                  "images_loaded": len(data.train) + len(data.val) + len(data.test), "batch_size": batch,
                  "steps": steps, "load_seconds": load_seconds,
                  "images_per_second": batch * (len(stamps) - 1) / (stamps[-1] - stamps[0]),
                  "peak_rss_gib": own, "worker_peak_rss_gib": workers}))
"""


def make_folder(root: Path, files: int) -> None:
    """RGB JPEGs of 256x256 (smooth colour fields plus noise) in two class folders, plus a small test/ folder."""
    from PIL import Image

    if (root / "done").is_file():
        return
    rng = np.random.default_rng(0)
    grid = np.linspace(0, 1, 256)[None, :, None]
    for part, count in (("train", files), ("test", files // 10)):
        for index in range(count):
            label = index % 2
            folder = root / part / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            colour = rng.uniform(0, 1, 3)[None, None, :]
            field = (grid * colour if label else grid.transpose(1, 0, 2) * colour) * 200
            pixels = np.clip(field + rng.normal(0, 25, (256, 256, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{index}.jpg", quality=90)
    (root / "done").write_text("")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--force", action="store_true", help="measure finished cases again")
    parser.add_argument("--out", default=str(default_path(__file__)), help="where the results go")
    args = parser.parse_args()
    out = Path(args.out)
    done = json.loads(out.read_text())["cases"] if out.is_file() else {}
    for name in args.cases.split(","):
        if name in done and not args.force:
            continue
        dataset, resolution, subset, batch, steps = CASES[name]
        data_dir = ""
        if dataset == "imagefolder":
            make_folder(FOLDER, FOLDER_FILES)
            data_dir = str(FOLDER)
        result = subprocess.run([sys.executable, "-c", CHILD, dataset, data_dir, str(resolution), str(subset or 0),
                                 str(batch), str(steps)], capture_output=True, text=True)
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            return 1
        done[name] = json.loads(result.stdout.strip().splitlines()[-1])
        row = done[name]
        print(f"{name:16}{row['images_loaded']:>8} images at {resolution} px, batch {batch}: peak "
              f"{row['peak_rss_gib']:.2f} GiB (workers {row['worker_peak_rss_gib']:.2f}), "
              f"{row['images_per_second']:.1f} images/s", flush=True)
        write_json(out, {"model": "efficientnet-b0, final-training recipe", "cases": done, "before": BEFORE})
    return 0


if __name__ == "__main__":
    sys.exit(main())
