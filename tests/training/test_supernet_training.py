"""Sandwich training of the supernet runs on the one engine and resumes exactly from its checkpoint."""

import torch

from nas.space.search_space import SearchSpace
from nas.space.supernet import extreme_samples
from nas.training.checkpoint import load_checkpoint, save_checkpoint
from nas.training.config import ProxyConfig, SupernetConfig, TaskConfig
from nas.training.data import load_task_data
from nas.training.supernet import SupernetTrainer


def test_sandwich_training_resumed_from_its_checkpoint_reaches_the_uninterrupted_weights(tmp_path):
    data = load_task_data(TaskConfig(subset=100, threads=1), 32, device="cpu")
    space = SearchSpace(data.num_classes, data.in_channels, 32, fixed={"layers": -1}, stem_stride=2)
    config = SupernetConfig(epochs=2, random_paths=1)
    proxy = ProxyConfig(batch_size=32)
    uninterrupted = SupernetTrainer(space, data, proxy, config)
    initial = {key: value.clone() for key, value in uninterrupted.model.state_dict().items()}
    for _ in range(2):
        uninterrupted.train_epoch()

    first = SupernetTrainer(space, data, proxy, config)
    first.train_epoch()
    save_checkpoint(tmp_path / "checkpoint.pt", first.state(), [])
    resumed = SupernetTrainer(space, data, proxy, config)
    resumed.load_state(load_checkpoint(tmp_path / "checkpoint.pt", torch.device("cpu"))[0])
    resumed.train_epoch()

    expected = uninterrupted.model.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in resumed.model.state_dict().items())
    assert not all(torch.equal(value, expected[key]) for key, value in initial.items())
    accuracy = resumed.path_accuracy(space.decode(extreme_samples(space)[1]))
    assert 0.0 <= accuracy <= 1.0
