"""Latency measured on this machine (PyTorch eager and ONNX Runtime) and the latency table that predicts it: a
deeper network measures slower, every figure names its protocol, and the table is stored per protocol and reused."""

from dataclasses import replace

import pytest

from db.session import open_database
from nas.evaluation.latency import MIN_WINDOWS, LatencyError, LatencyProtocol, cpu_model, measure_latency
from nas.evaluation.latency_table import LatencyTable, network_parts, stored_reference_speed
from nas.space.builder import build_model
from nas.space.layout import network_layout
from nas.space.search_space import SearchSpace

SPACE = SearchSpace(num_classes=10, in_channels=1, resolution=32, stem_stride=2)


def twice_the_blocks(spec):
    return replace(spec, stages=tuple(replace(stage, repeats=2 * stage.repeats) for stage in spec.stages))


@pytest.mark.parametrize("runtime", ["eager", "onnxruntime"])
def test_a_network_with_twice_the_blocks_measures_slower(runtime):
    spec = SPACE.reference_spec()
    protocol = LatencyProtocol(runtime=runtime)
    shape = (1, 1, 32, 32)
    base, deeper = (measure_latency(build_model(s), shape, protocol) for s in (spec, twice_the_blocks(spec)))
    assert deeper.median_ms > 1.3 * base.median_ms
    assert base.runs >= MIN_WINDOWS and base.resolution == 32 and 0 <= base.iqr_ms < base.median_ms


def test_a_latency_says_what_it_was_measured_on():
    line = LatencyProtocol(runtime="onnxruntime", threads=2, batch=32).describe()
    import onnxruntime

    assert line.startswith(f"ONNX Runtime {onnxruntime.__version__}, 2 threads, batch 32, CPU {cpu_model()}")
    with pytest.raises(LatencyError, match="no CUDA GPU"):
        LatencyProtocol(device="cuda").check()
    with pytest.raises(LatencyError, match="unknown latency runtime"):
        LatencyProtocol(runtime="tflite").check()


def test_the_table_is_stored_per_protocol_and_reused(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 't.db'}")
    layout = network_layout(SPACE.reference_spec())
    table = LatencyTable(LatencyProtocol(), db)
    predicted = table.predict(layout)
    assert predicted > 0 and table.measured_now == len({part.item for part in network_parts(layout)})
    again = LatencyTable(LatencyProtocol(), db)
    assert again.predict(layout) == predicted and again.measured_now == 0
    other_threads = LatencyTable(LatencyProtocol(threads=2), db)
    assert other_threads.key != table.key and set(other_threads.figures) == {"reference"}


def test_calibration_fits_the_whole_networks_it_measured(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 't.db'}")
    table = LatencyTable(LatencyProtocol(), db)
    spec = SPACE.reference_spec()
    layouts = [network_layout(s) for s in (spec, twice_the_blocks(spec), replace(spec, width=1.5))]
    table.calibrate(layouts)
    for layout in layouts:  # as many networks as coefficients: the fit passes through each
        assert table.predict(layout) == pytest.approx(table.measure(layout).median_ms, rel=1e-6)
    assert LatencyTable(LatencyProtocol(), db).measure(layouts[1]) == table.measure(layouts[1])


def test_processes_on_one_database_share_the_reference_speed(tmp_path):
    """A family measured by one `scaling.grow` and another by the next are on one scale, the batch-1 latency
    table's: the machine's speed at the moment each process started does not enter their figures."""
    db = open_database(f"sqlite:///{tmp_path / 't.db'}")
    table = LatencyTable(LatencyProtocol(), db)
    assert stored_reference_speed(LatencyProtocol(), db) == table.reference_ms
    assert stored_reference_speed(LatencyProtocol(batch=32), open_database(f"sqlite:///{tmp_path / 't.db'}")) \
        == table.reference_ms
    assert stored_reference_speed(LatencyProtocol(threads=2), db) != table.reference_ms
