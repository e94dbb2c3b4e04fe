import random
from dataclasses import replace

import pytest
import torch

from nas.space.builder import build_model, network_layout
from nas.space.flops import count_flops, count_params, measure_flops, measure_params
from nas.space.spec import (
    B0_BLOCKS,
    BLOCK_TYPES,
    ArchSpec,
    SpecError,
    StageSpec,
    decode,
    decode_stage,
    efficientnet_b0,
    encode_stage,
    from_json,
    named_spec,
    round_filters,
    round_repeats,
    spec_from_dict,
    spec_to_dict,
    to_json,
)


def random_spec(rng: random.Random, max_stages: int = 5) -> ArchSpec:
    stem = rng.choice([8, 16, 24, 32])
    channels = stem
    stages = []
    for _ in range(rng.randint(1, max_stages)):
        block = rng.choice(BLOCK_TYPES)
        out = rng.choice([8, 16, 24, 40])
        stages.append(
            StageSpec(
                repeats=rng.randint(1, 3),
                kernel=rng.choice([1, 3, 5, 7]),
                stride=rng.choice([1, 2]),
                expand_ratio=rng.choice([1, 3, 6]) if block == "mbconv" else 1,
                in_channels=channels,
                out_channels=out,
                se_ratio=rng.choice([0.0, 0.25, 0.5]),
                skip=rng.random() < 0.7,
                block=block,
            )
        )
        channels = out
    return ArchSpec(
        stages=tuple(stages),
        stem_channels=stem,
        head_channels=rng.choice([64, 128, 1280]),
        width=rng.choice([0.5, 0.75, 1.0, 1.1, 1.4]),
        depth=rng.choice([0.8, 1.0, 1.2, 1.8]),
        resolution=rng.choice([32, 40, 57, 64, 96]),
        dropout=rng.choice([0.0, 0.2]),
        drop_connect=rng.choice([0.0, 0.2]),
        num_classes=rng.choice([2, 10, 100]),
        in_channels=rng.choice([1, 3]),
        stem_stride=rng.choice([1, 2]),
    )


def test_b0_block_strings_round_trip_exactly():
    spec = efficientnet_b0()
    assert spec.block_strings() == list(B0_BLOCKS)
    for text in B0_BLOCKS:
        assert encode_stage(decode_stage(text)) == text


def test_codec_round_trips_every_random_spec(rng):
    for _ in range(300):
        spec = random_spec(rng)
        params = {k: v for k, v in spec_to_dict(spec).items() if k not in ("format", "blocks")}
        assert decode(spec.block_strings(), **params) == spec
        assert from_json(to_json(spec)) == spec
        assert spec_from_dict(spec_to_dict(spec)) == spec


def test_extra_block_types_and_noskip_encode_distinctly():
    ds = decode_stage("ds_r2_k5_s22_i16_o24_se0.25_noskip")
    assert (ds.block, ds.kernel, ds.stride, ds.skip, ds.expand_ratio) == ("dsconv", 5, 2, False, 1)
    cn = decode_stage("cn_r1_k3_s11_i16_o16")
    assert (cn.block, cn.se_ratio) == ("conv", 0.0)
    assert encode_stage(ds) == "ds_r2_k5_s22_i16_o24_se0.25_noskip"


@pytest.mark.parametrize(
    "text",
    ["", "r1_k3", "r1_k3_s12_e1_i32_o16", "r1_k3_s11_e1_i32_o16_zz4", "ds_r1_k3_s11_e6_i32_o16", "r0_k3_s11_e1_i32_o16",
     "r1_k4_s11_e1_i32_o16", "r1_k3_s11_e1_i32_o16_se2"],
)
def test_bad_block_strings_are_rejected_with_spec_error(text):
    with pytest.raises(SpecError):
        decode_stage(text)


def test_inconsistent_channels_between_stages_are_rejected():
    with pytest.raises(SpecError, match="stage 2"):
        decode(["r1_k3_s11_e1_i32_o16", "r1_k3_s11_e6_i24_o24"])


@pytest.mark.parametrize(
    "filters,width,expected",
    [(32, 1.0, 32), (32, 1.1, 32), (32, 1.2, 40), (32, 1.4, 48), (32, 1.6, 48), (32, 1.8, 56), (32, 2.0, 64),
     (16, 1.1, 16), (24, 1.4, 32), (40, 1.2, 48), (112, 1.1, 120), (192, 1.4, 272), (320, 1.8, 576),
     (1280, 1.1, 1408), (1280, 1.2, 1536), (1280, 1.4, 1792), (1280, 1.6, 2048), (1280, 2.0, 2560),
     (16, 0.75, 16), (40, 0.75, 32), (3, 1.0, 8)],
)
def test_round_filters_matches_official_values(filters, width, expected):
    assert round_filters(filters, width) == expected


@pytest.mark.parametrize("repeats,depth,expected", [(1, 1.1, 2), (2, 1.1, 3), (3, 1.2, 4), (4, 1.8, 8), (1, 3.1, 4), (4, 3.1, 13), (3, 1.0, 3)])
def test_round_repeats_is_ceil(repeats, depth, expected):
    assert round_repeats(repeats, depth) == expected


def test_b0_has_exactly_the_official_parameter_count_and_flops():
    spec = efficientnet_b0()
    model = build_model(spec)
    assert measure_params(model) == 5_288_548
    assert count_params(spec) == 5_288_548
    assert count_flops(spec) == measure_flops(model, 224) == 385_814_752


# torchvision's / timm's parameter counts of efficientnet_b1..b7
@pytest.mark.parametrize(
    "name,params",
    [("efficientnet-b1", 7_794_184), ("efficientnet-b2", 9_109_994), ("efficientnet-b3", 12_233_232),
     ("efficientnet-b4", 19_341_616), ("efficientnet-b5", 30_389_784), ("efficientnet-b6", 43_040_704),
     ("efficientnet-b7", 66_347_960)],
)
def test_official_named_models_have_reference_parameter_counts(name, params):
    assert count_params(named_spec(name)) == params


def test_analytic_counts_equal_thop_and_built_model_on_random_specs(rng):
    for _ in range(40):
        spec = random_spec(rng)
        model = build_model(spec)
        assert count_params(spec) == measure_params(model), spec
        for resolution in (spec.resolution, 33):
            assert count_flops(spec, resolution) == measure_flops(model, resolution, spec.in_channels), spec


def test_forward_and_backward_run_for_random_specs_at_any_resolution(rng):
    for _ in range(10):
        spec = random_spec(rng)
        model = build_model(spec).train()
        size = rng.choice([32, 37, 50])
        out = model(torch.randn(2, spec.in_channels, size, size))
        assert out.shape == (2, spec.num_classes)
        out.sum().backward()
        assert all(p.grad is not None for p in model.parameters())


def test_stem_stride_one_keeps_a_2x2_map_at_32_px_and_names_a_distinct_network():
    b0 = replace(efficientnet_b0(num_classes=10, in_channels=1), resolution=32)
    small = replace(b0, stem_stride=1)
    assert network_layout(b0).head_size == 1
    assert network_layout(small).head_size == 2
    assert build_model(small)(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    assert small.arch_key() != b0.arch_key()
    assert b0.arch_key().endswith("|stem32|head1280|w1|d1")
    older_file = {key: value for key, value in spec_to_dict(b0).items() if key != "stem_stride"}
    assert spec_from_dict(older_file) == b0
    assert spec_from_dict(spec_to_dict(small)) == small
    with pytest.raises(SpecError, match="stem_stride"):
        replace(b0, stem_stride=4)


def test_identity_skip_only_where_stride_one_and_channels_match():
    layout = network_layout(efficientnet_b0())
    for block in layout.blocks:
        assert block.skip == (block.stride == 1 and block.in_channels == block.out_channels)
    rates = [block.drop_path for block in layout.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.2) and rates == sorted(rates)


def test_stochastic_depth_is_active_in_training_only():
    spec = decode(["r3_k3_s11_e1_i32_o32"], drop_connect=0.9, dropout=0.0, resolution=32)
    model = build_model(spec)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    assert not torch.equal(a, model(x))


def test_resolution_below_32_is_refused():
    with pytest.raises(SpecError, match="at least 32"):
        count_flops(efficientnet_b0(), 16)
