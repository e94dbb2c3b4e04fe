"""What the stem stride gives at small resolutions: EfficientNet-B0 with stem stride 1 and 2, trained with the
final-training recipe on Fashion-MNIST at 32 and 64 px, validation accuracy against FLOPs.

Run: .venv/bin/python bench/stem_stride.py [--epochs 3] [--images 5000] [--resolutions 32,64]
`--stem-stride auto` (nas.search) rests on it: at 32 px B0's stride-2 stem leaves a 1x1 map before the head, at
64 px 2x2. Each network trains on the first `--images` of the training split (2,000 validation images held out
of the training files; the test split is not read), 2 threads, seed 0. Finished cases are kept in
bench/stem_stride.json and skipped on a rerun.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_json import default_path, write_json  # noqa: E402

from nas.space.flops import count_flops, count_params  # noqa: E402
from nas.space.search_space import head_map_size  # noqa: E402
from nas.space.spec import efficientnet_b0  # noqa: E402
from nas.training.config import TaskConfig, TrainingRecipe  # noqa: E402
from nas.training.data import load_task_data  # noqa: E402
from nas.training.engine import Trainer  # noqa: E402

VAL_IMAGES = 2000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--resolutions", default="32,64")
    parser.add_argument("--out", default=str(default_path(__file__)), help="where the results go")
    args = parser.parse_args()
    out = Path(args.out)
    cases = json.loads(out.read_text())["cases"] if out.is_file() else {}
    for resolution in (int(r) for r in args.resolutions.split(",")):
        data = load_task_data(TaskConfig(dataset="fashion-mnist", threads=2), resolution, subset=args.images,
                              val_images=VAL_IMAGES, device="cpu")
        for stride in (2, 1):
            name = f"{resolution}px-stride{stride}"
            if name in cases:
                continue
            spec = replace(efficientnet_b0(), resolution=resolution, stem_stride=stride)
            trainer = Trainer(spec, data, TrainingRecipe(epochs=args.epochs, flip=True))
            start = time.perf_counter()
            curve = [trainer.fit_epoch().point() for _ in range(args.epochs)]
            cases[name] = {
                "resolution": resolution, "stem_stride": stride, "head_map": head_map_size(resolution, stride),
                "flops": count_flops(trainer.spec), "params": count_params(trainer.spec),
                "val_accuracy": trainer.best["accuracy"], "curve": curve, "seconds": time.perf_counter() - start,
            }
            row = cases[name]
            print(f"{name:16} head {row['head_map']}x{row['head_map']}, {row['flops'] / 1e6:.1f}M FLOPs: validation "
                  f"{row['val_accuracy']:.4f} in {row['seconds']:.0f} s", flush=True)
            write_json(out, {"setup": {"network": "efficientnet-b0", "data": "fashion-mnist", "train_images":
                                       args.images, "val_images": VAL_IMAGES, "epochs": args.epochs,
                                       "flops": "multiply-accumulates of conv and linear layers at each resolution"},
                             "cases": cases})
    return 0


if __name__ == "__main__":
    sys.exit(main())
