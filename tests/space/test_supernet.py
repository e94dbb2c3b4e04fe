"""The supernet: every architecture of the space is a path whose standalone network, built by the one builder
with the path's weights copied out, computes what the path computes."""

import random
from dataclasses import replace

import pytest
import torch

from nas.space.flops import count_flops
from nas.space.search_space import SearchSpace
from nas.space.spec import SpecError
from nas.space.supernet import Supernet, extreme_samples

SPACE = SearchSpace(num_classes=10, in_channels=1, resolution=32, stem_stride=2)


def draw(space: SearchSpace, rng: random.Random) -> dict:
    return {label: rng.choice(values) for label, values in space.choices()}


@pytest.mark.parametrize("kernel_transform", [False, True])
def test_an_extracted_network_computes_what_its_path_computes(kernel_transform):
    torch.manual_seed(0)
    supernet = Supernet(SPACE, kernel_transform=kernel_transform)
    rng = random.Random(7)
    images = torch.randn(6, 1, 32, 32)
    # Training-mode passes move BatchNorm statistics off their initial values, and a perturbed transform makes
    # the 3x3 kernels differ from the 5x5 centres, so equality is not that of fresh weights.
    supernet.train()
    with torch.no_grad():
        for _ in range(4):
            supernet(images, supernet.path(SPACE.decode(draw(SPACE, rng))))
        for name, parameter in supernet.named_parameters():
            if name.endswith("transform"):
                parameter.add_(0.05 * torch.randn_like(parameter))
    supernet.eval()
    kinds = set()
    for _ in range(12):
        spec = SPACE.decode(draw(SPACE, rng))
        kinds.update(stage.block for stage in spec.stages)
        network = supernet.extract(spec).eval()
        with torch.no_grad():
            expected = supernet(images, supernet.path(spec))
            assert torch.allclose(network(images), expected, atol=1e-5, rtol=1e-4)
        assert sum(p.numel() for p in network.parameters()) < sum(p.numel() for p in supernet.parameters())
    assert kinds == {"mbconv", "dsconv", "conv"}


def test_the_sandwich_paths_are_the_largest_and_smallest_mbconv_and_anything_else_is_refused():
    largest, smallest = extreme_samples(SPACE)
    flops = [count_flops(SPACE.decode(draw(SPACE, random.Random(seed)))) for seed in range(30)]
    assert count_flops(SPACE.decode(smallest)) <= min(flops)
    assert all(largest[f"stage{i}_block"] == "mbconv_e6" for i in range(1, 8))
    assert all(largest[f"stage{i}_width"] == 1.25 and largest[f"stage{i}_layers"] == 1 for i in range(1, 8))
    supernet = Supernet(SPACE)
    spec = SPACE.decode(largest)
    for other in (replace(spec, width=1.1), replace(spec, num_classes=3), replace(spec, stem_stride=1)):
        with pytest.raises(SpecError):
            supernet.path(other)
