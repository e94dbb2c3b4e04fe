"""Peak memory and time of exporting the official family up to B7 (ONNX and the torch.export program), member by
member.

Run: .venv/bin/python bench/export_memory.py [--phi-max 7]
Each member is exported in a fresh child process so its peak resident memory is its own. Results go to
bench/export_memory.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

from bench_json import default_path, write_json

CHILD = """
import json, resource, sys, time
from pathlib import Path
from nas.space.spec import named_spec
from nas.space.flops import count_params
import torch
from nas.space.builder import build_model
from scaling.model_files import write_onnx, write_program
spec = named_spec(sys.argv[1])
start = time.perf_counter()
model = build_model(spec).eval()
example = torch.zeros(2, spec.in_channels, spec.resolution, spec.resolution)
write_onnx(model, example, Path(sys.argv[2]) / "member.onnx", {"member": sys.argv[1]})
write_program(model, example, Path(sys.argv[2]) / "member.pt2", {"member": sys.argv[1]})
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": time.perf_counter() - start, "peak_mib": peak_kib / 1024, "params": count_params(spec)}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phi-max", type=int, default=7)
    parser.add_argument("--out", default=str(default_path(__file__)), help="where the results go")
    args = parser.parse_args()
    members = {}
    print(f"{'member':18}{'params':>12}{'export s':>10}{'peak RSS':>12}{'weights':>10}")
    with tempfile.TemporaryDirectory() as folder:
        for phi in range(args.phi_max + 1):
            name = f"efficientnet-b{phi}"
            result = subprocess.run([sys.executable, "-c", CHILD, name, folder], capture_output=True, text=True)
            if result.returncode != 0:
                print(result.stderr, file=sys.stderr)
                return 1
            data = json.loads(result.stdout.strip().splitlines()[-1])
            members[name] = data
            print(f"{name:18}{data['params']:>12,}{data['seconds']:>10.1f}{data['peak_mib']:>9.0f} MiB"
                  f"{data['params'] * 4 / 2**20:>7.0f} MiB")
    write_json(args.out, {"formats": ["onnx", "pt2"], "members": members})
    return 0


if __name__ == "__main__":
    sys.exit(main())
