"""The deployable files of one trained network, each carrying its contract (what it takes, what it gives, how good
it is and where it came from) so that a user needs none of effnas to run or describe it:

- ONNX (any batch), the contract in `metadata_props`, read back with onnxruntime's
  `InferenceSession(path).get_modelmeta().custom_metadata_map`;
- a `torch.export` program (`.pt2`, any batch), the contract as its extra file `contract.json`, read back with
  `torch.export.load(path, extra_files={"contract.json": ""})`;
- safetensors weights of the whole network (normalisation buffers included), the contract in its metadata;
- an int8 ONNX model, statically quantised by ONNX Runtime and calibrated on training images;
- TorchScript, deprecated by PyTorch, written only when asked for.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ONNX_OPSET = 18
CONTRACT_FILE = "contract.json"
# ONNX metadata keys: one per contract field, each value JSON.
METADATA_PREFIX = "effnas."
INPUT_NAME, OUTPUT_NAME = "image", "logits"
# Calibration: a few hundred training images fix the int8 activation ranges (ONNX Runtime's MinMax).
CALIBRATION_IMAGES = 512
CALIBRATION_BATCH = 64


def _batch_dimension() -> dict[int, Any]:
    return {0: torch.export.Dim("batch", min=1, max=65536)}


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """torch.onnx's exporter logs each torchvision operator it cannot register (torchvision is absent here) and
    prints its progress; neither is the user's concern. Its warnings still show."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def contract_metadata(contract: dict[str, Any]) -> dict[str, str]:
    """The contract as string key-value pairs: `effnas.<field>` -> the field as JSON."""
    return {METADATA_PREFIX + key: json.dumps(value) for key, value in contract.items()}


def contract_from_metadata(metadata: dict[str, str]) -> dict[str, Any]:
    return {key[len(METADATA_PREFIX):]: json.loads(value) for key, value in metadata.items()
            if key.startswith(METADATA_PREFIX)}


def write_onnx(model: nn.Module, example: torch.Tensor, path: Path, contract: dict[str, Any]) -> None:
    """`model` as one self-contained ONNX file (weights inside, any batch size), its contract in the metadata."""
    import onnx

    with _quiet_exporter(), torch.no_grad():
        torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False, opset_version=ONNX_OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_shapes=(_batch_dimension(),), verbose=False)
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, contract_metadata(contract))
    onnx.save(proto, str(path))


def write_program(model: nn.Module, example: torch.Tensor, path: Path, contract: dict[str, Any]) -> None:
    """`model` as a torch.export program (any batch size), its contract as the extra file contract.json."""
    program = torch.export.export(model, (example,), dynamic_shapes=(_batch_dimension(),))
    torch.export.save(program, str(path), extra_files={CONTRACT_FILE: json.dumps(contract)})


def write_torchscript(model: nn.Module, example: torch.Tensor, path: Path, contract: dict[str, Any]) -> None:
    with torch.no_grad():
        scripted = torch.jit.trace(model, example)
    torch.jit.save(scripted, str(path), _extra_files={CONTRACT_FILE: json.dumps(contract)})


# Format name -> writer of a program file: (model, example input, path, contract).
PROGRAM_WRITERS = {"onnx": write_onnx, "pt2": write_program, "torchscript": write_torchscript}


def write_safetensors(model: nn.Module, path: Path, contract: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(path), metadata=contract_metadata(contract))
    # safetensors creates the file readable by its owner only; the other files of a folder meant to be shared
    # follow the umask, and so does this one.
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, contract) of a file that write_safetensors wrote."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        state = {name: handle.get_tensor(name) for name in handle.keys()}
    return state, contract_from_metadata(metadata)


def quantize_int8(float_path: Path, int8_path: Path, calibration: Iterable[np.ndarray]) -> None:
    """A statically quantised copy of an ONNX model (QDQ format, int8 weights per channel, uint8 activations with
    ranges from the calibration batches); the float model's metadata is kept. Both paths are files."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch}

    prepared = int8_path.with_name(int8_path.name + ".prepared")
    try:
        with warnings.catch_warnings():
            # ONNX Runtime suggests its pre-processing when a model was not pre-processed; it is, just above.
            warnings.filterwarnings("ignore", message=".*quant_pre_process.*", module=r"onnxruntime\.quantization")
            quant_pre_process(str(float_path), str(prepared))
            quantize_static(str(prepared), str(int8_path), Calibration(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        prepared.unlink(missing_ok=True)


def onnx_accuracy(path: Path, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> float:
    """Top-1 accuracy of an ONNX model over (pixels, labels) batches, on the CPU."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    correct = total = 0
    for pixels, labels in batches:
        logits = session.run(None, {INPUT_NAME: pixels})[0]
        correct += int((logits.argmax(1) == labels).sum())
        total += len(labels)
    return correct / total
