"""How long each FLOPs counter takes per spec, for EfficientNet-B0 at 224.

Run: .venv/bin/python bench/flops_counters.py [--out FILE]
The measured counter includes building the model, as a caller that only has a spec must do. Results go to
bench/flops_counters.json (or --out).
"""

from __future__ import annotations

import argparse
import time

from bench_json import default_path, write_json

from nas.space.builder import build_model
from nas.space.flops import FLOPS_CONVENTION, count_flops, format_flops, measure_flops
from nas.space.spec import efficientnet_b0


def per_call(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(default_path(__file__)), help="where the results go")
    args = parser.parse_args()
    spec = efficientnet_b0()
    analytic = per_call(lambda: count_flops(spec, 224), 2000)
    measured = per_call(lambda: measure_flops(build_model(spec), 224), 10)
    profile_only_model = build_model(spec)
    profile_only = per_call(lambda: measure_flops(profile_only_model, 224), 10)
    print(f"EfficientNet-B0 at 224: {format_flops(count_flops(spec, 224))} ({FLOPS_CONVENTION})")
    print(f"analytic (spec only)        : {analytic * 1e6:10.1f} us per spec")
    print(f"thop (build + profile)      : {measured * 1e6:10.1f} us per spec")
    print(f"thop (profile, model built) : {profile_only * 1e6:10.1f} us per spec")
    print(f"speed-up analytic vs thop   : {measured / analytic:10.0f}x (vs profile only: {profile_only / analytic:.0f}x)")
    write_json(args.out, {
        "flops": count_flops(spec, 224), "flops_convention": f"{FLOPS_CONVENTION}, EfficientNet-B0 at 224 px",
        "microseconds_per_spec": {"analytic": analytic * 1e6, "thop_build_and_profile": measured * 1e6,
                                  "thop_profile_only": profile_only * 1e6},
    })


if __name__ == "__main__":
    main()
