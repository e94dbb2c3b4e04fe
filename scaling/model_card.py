"""The export folder's README.md: a Hugging Face model card (YAML metadata with a `model-index` of each trained
member's test accuracy, then prose) written from the members' contracts. Nothing is uploaded."""

from __future__ import annotations

from typing import Any

from nas.space.flops import format_flops, format_params

# effnas data set name -> (Hugging Face data set id, display name)
DATASETS = {"fashion-mnist": ("fashion_mnist", "Fashion-MNIST"), "mnist": ("mnist", "MNIST"),
            "cifar10": ("cifar10", "CIFAR-10")}


def dataset_names(dataset: str) -> tuple[str, str]:
    return DATASETS.get(dataset, (dataset, dataset))


def _accuracy_text(contract: dict[str, Any]) -> str:
    if contract["accuracy"] is None:
        return "untrained"
    test = contract["accuracy"]["test"]
    spread = f" ± {test['sd']:.4f}" if test["sd"] is not None else ""
    return f"{test['mean']:.4f}{spread}"


def _seeds_text(seeds: list[int]) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"mean of seeds {', '.join(map(str, seeds))}"


def card_metadata(family_name: str, contracts: list[dict[str, Any]]) -> Any:
    """The YAML metadata: one accuracy per trained member (mean over its seeds), on the data set's test split."""
    from huggingface_hub import EvalResult, ModelCardData

    results = []
    datasets = set()
    for contract in contracts:
        if contract["accuracy"] is None:
            continue
        dataset_id, dataset_name = dataset_names(contract["data"]["dataset"])
        datasets.add(dataset_id)
        test = contract["accuracy"]["test"]
        results.append(EvalResult(
            task_type="image-classification", dataset_type=dataset_id, dataset_name=dataset_name,
            dataset_split="test", metric_type="accuracy", metric_value=round(test["mean"], 6),
            metric_name=f"{contract['member']} test accuracy ({_seeds_text(test['seeds'])})",
            metric_args={"member": contract["member"], "sd": test["sd"], "seeds": test["seeds"],
                         "run_ids": test["run_ids"]}))
    return ModelCardData(model_name=family_name, eval_results=results or None, datasets=sorted(datasets) or None,
                         library_name="onnx", pipeline_tag="image-classification", metrics=["accuracy"],
                         tags=["effnas", "efficientnet", "neural-architecture-search", "onnx", "safetensors"])


def _member_table(contracts: list[dict[str, Any]], int8: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| member | FLOPs | params | resolution | test accuracy (mean ± sd) | seeds | int8 test accuracy | files |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for contract in contracts:
        arch = contract["architecture"]
        seeds = len(contract["accuracy"]["test"]["seeds"]) if contract["accuracy"] else "–"
        quantised = int8.get(contract["member"])
        int8_text = f"{quantised['test_accuracy']:.4f}" if quantised else "–"
        lines.append(f"| {contract['member']} | {format_flops(arch['flops'])} | {format_params(arch['params'])} | "
                     f"{arch['resolution']} | {_accuracy_text(contract)} | {seeds} | {int8_text} | "
                     f"{', '.join(contract['files'])} |")
    return lines


def _baseline_text(contract: dict[str, Any]) -> str:
    if contract["search"] is not None:
        return "a neural architecture search over MnasNet's factorized MBConv space found the baseline B0"
    baseline = contract["baseline"]
    return f"the baseline B0 is {'the official' if baseline['kind'] == 'name' else 'the network of'} {baseline['ref']}"


def _how_made(contract: dict[str, Any]) -> list[str]:
    search, family = contract["search"], contract["family"]
    lines = []
    if search is not None:
        lines.append(f"- **Search** {search['id']} ({search['name']}): {search['strategy']} on {search['dataset']}, "
                     f"target {format_flops(search['target_flops'])} FLOPs at {search['resolution']} px; the baseline "
                     f"(B0) is its trial {search['trial_number']}.")
    else:
        lines.append(f"- **Baseline** (B0): {contract['baseline']['kind']} {contract['baseline']['ref']}.")
    lines.append(f"- **Family** {family['id']} ({family['name']}): rule {family['rule']}, coefficients "
                 f"{family['coefficients']['described']}.")
    return lines


def _recipe(contract: dict[str, Any]) -> list[str]:
    recipe, data = contract["recipe"], contract["data"]
    settings = ", ".join(f"{key} {value}" for key, value in recipe.items())
    return [f"Trained by `scaling.train` on {dataset_names(data['dataset'])[1]} ({data['budget']}, {data['val_images']:,} "
            f"of the training files held out for validation; test accuracy on the data set's own test split): "
            f"{settings}. The exported weights are the seed with the highest validation accuracy."]


def _usage(member: str, contract: dict[str, Any]) -> list[str]:
    shape = contract["input"]["shape"]
    example = f"np.random.rand(1, {shape[1]}, {shape[2]}, {shape[3]}).astype(np.float32)"
    name = member.lower()
    return [
        "With ONNX Runtime (pixels in [0, 1]; the normalisation is inside the graph):", "", "```python",
        "import numpy as np, onnxruntime as ort",
        f'session = ort.InferenceSession("{name}.onnx")',
        f'logits = session.run(None, {{"image": {example}}})[0]', "```", "",
        "With PyTorch alone:", "", "```python", "import torch",
        f'program = torch.export.load("{name}.pt2")',
        f"logits = program.module()(torch.rand(1, {shape[1]}, {shape[2]}, {shape[3]}))", "```", "",
        f'With effnas installed: `effnas.load_member(folder, "{member}")` returns the network as a `torch.nn.Module` '
        "built from its spec and safetensors weights.",
        "Every file carries its contract (input, classes, accuracy, recipe, origin): ONNX in "
        "`session.get_modelmeta().custom_metadata_map`, the program as the extra file `contract.json`.",
    ]


def _int8_losses(int8: dict[str, dict[str, Any]]) -> list[str]:
    """A sentence for each member whose int8 model loses more than a point of test accuracy."""
    return [f"int8 {name} loses {100 * (q['float_test_accuracy'] - q['test_accuracy']):.1f} points of test accuracy "
            f"against float: use the float model where that matters." for name, q in int8.items()
            if q["float_test_accuracy"] - q["test_accuracy"] > 0.01]


def _limitations(contracts: list[dict[str, Any]], native: int | None) -> list[str]:
    trained = [c for c in contracts if c["trained"]]
    lines = []
    if trained:
        first = trained[0]["input"]
        color = first["color"]
        lines.append(f"- Trained on {color} images of {dataset_names(trained[0]['data']['dataset'])[1]}"
                     + (f", stored at {native} px and resized to each member's resolution" if native else "")
                     + ". Images unlike them (other content, colour, framing) are outside what the accuracies say.")
        resolutions = sorted({c["input"]["resolution"] for c in trained})
        if native is not None and any(r > native for r in resolutions):
            lines.append(f"- Members above {native} px see upsampled images: their extra resolution adds no detail, "
                         "so resolution scaling is not tested as it is on ImageNet.")
    untrained = [c["member"] for c in contracts if not c["trained"]]
    if untrained:
        lines.append(f"- {', '.join(untrained)}: untrained (random weights); "
                     f"{'its' if len(untrained) == 1 else 'their'} files give the architecture and cost only.")
    lines.append("- Accuracies are from this data set's test split, with the seeds listed; other data will differ.")
    return lines


def model_card(family_name: str, contracts: list[dict[str, Any]], int8: dict[str, dict[str, Any]],
               native_resolution: int | None) -> str:
    """The card's full text. `contracts` carry each member's `files`; `int8` maps member -> its int8 figures."""
    metadata = card_metadata(family_name, contracts)
    first = next((c for c in contracts if c["trained"]), contracts[0])
    arch = first["architecture"]
    lines = [
        "---", metadata.to_yaml(), "---", "", f"# {family_name}", "",
        f"An image classifier family made by effnas {first['effnas_version']}: {_baseline_text(first)}, and a "
        "scaling rule grew it into the larger members.", "",
        "## Members", "", *_member_table(contracts, int8), "",
        f"{arch['flops_convention'].split(', at ')[0]}, at each member's resolution. Test accuracy: mean ± sample "
        "standard deviation over the seeds trained.", "",
        "## How it was made", "", *_how_made(first), "",
    ]
    if first["trained"]:
        lines += ["## Training recipe", "", *_recipe(first), ""]
        lines += ["## How to use", "", *_usage(first["member"], first), ""]
    if int8:
        lines += ["## int8", "", "Statically quantised by ONNX Runtime (QDQ, int8 weights per channel, uint8 "
                  "activations), calibrated on training images:", "",
                  "| member | float test accuracy (exported seed) | int8 test accuracy | float size | int8 size |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {name} | {q['float_test_accuracy']:.4f} | {q['test_accuracy']:.4f} | "
                  f"{q['float_bytes'] / 1e6:.2f} MB | {q['bytes'] / 1e6:.2f} MB |" for name, q in int8.items()]
        losses = _int8_losses(int8)
        lines += ["", *losses, ""] if losses else [""]
    lines += ["## Limitations", "", *_limitations(contracts, native_resolution), ""]
    return "\n".join(lines)
