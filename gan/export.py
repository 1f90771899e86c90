"""Exporting a generator alone, to run without this project: safetensors, ONNX or TorchScript.

Each format holds the generator's weights (with spectral norm baked in: the normalised weights
themselves) and a description of it (``metadata``): its config, latent size, number of classes,
sample shape, step and which weights (``ema`` or ``raw``). Every format maps

    z (B, latent_dim) float32 [, y (B,) int64 classes, for a conditional generator]
        → samples (B, C, H, W) float32 in [−1, 1] for images (uint8 pixels: round((x + 1) · 127.5)),
          or (B, D) float32 for points,

the same numbers as the service's own generator (``gan.sample``) for the same latents.

- ``safetensors``: the weights, with the description and ``layers`` (the network as a list of
  functional ops: ``program``) as JSON strings in the header's ``__metadata__``; README.md's
  loader runs it with ``torch.nn.functional`` alone. Needs the ``safetensors`` package.
- ``onnx``: inputs ``z`` (and ``y``), output ``samples``, any batch size; the description in the
  model's ``metadata_props``. Needs the ``onnx`` package (onnxruntime runs it).
- ``torchscript``: ``torch.jit.load(file)(z)`` or ``(z, y)``; the description is the extra file
  ``gan.json`` (``torch.jit.load(f, _extra_files={"gan.json": ""})``). Needs torch alone.

The optional packages are imported when a format needs them (``MissingPackage`` otherwise).
"""

from __future__ import annotations

import importlib
import io
import json
import warnings
from dataclasses import replace
from types import ModuleType
from typing import Any, Literal

import torch
from torch import Tensor, nn

from gan.config import TrainConfig
from gan.models import ClassAffine, Generator, build_models

Format = Literal["safetensors", "onnx", "torchscript"]
FORMATS: tuple[Format, ...] = ("safetensors", "onnx", "torchscript")
PACKAGES: dict[Format, tuple[str, ...]] = {
    "safetensors": ("safetensors.torch",),
    "onnx": ("onnx",),
    "torchscript": (),
}
EXPORT_FORMAT = "gan-generator"  # the "format" entry of every export's metadata
EXPORT_VERSION = 1
ONNX_OPSET = 17
TORCHSCRIPT_METADATA = "gan.json"  # the extra file of a TorchScript export


class MissingPackage(RuntimeError):
    """A format needs a package that is not installed; the message names both."""

    def __init__(self, format: str, package: str) -> None:
        super().__init__(
            f"exporting format {format} needs the {package!r} package, which is not installed "
            "(pip install 'gan-service[export]')"
        )
        self.format, self.package = format, package


def require(format: Format) -> list[ModuleType]:
    """The packages ``format`` needs, imported; MissingPackage for the first one missing."""
    modules = []
    for module in PACKAGES[format]:
        try:
            modules.append(importlib.import_module(module))
        except ImportError:
            raise MissingPackage(format, module.split(".")[0]) from None
    return modules


def plain_copy(G: Generator, config: TrainConfig) -> Generator:
    """A generator like ``G`` in eval mode without spectral norm, whose weights are the
    normalised ones ``G`` computes (in eval mode), so that exports hold plain weights."""
    plain, _ = build_models(replace(config, spectral_norm="none"), G.shape, G.num_classes)
    source = dict(G.eval().named_modules())
    with torch.no_grad():
        for name, module in plain.named_modules():
            own = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
            for key, tensor in own:
                tensor.copy_(getattr(source[name], key))
    return plain.eval()


def metadata(G: Generator, config: TrainConfig, step: int, ema: bool) -> dict[str, str]:
    """The description every export carries, as strings (safetensors' and ONNX's metadata are
    str → str): numbers and lists as JSON."""
    return {
        "format": EXPORT_FORMAT,
        "format_version": str(EXPORT_VERSION),
        "latent_dim": str(G.latent_dim),
        "num_classes": str(G.num_classes),
        "shape": json.dumps(list(G.shape)),
        "output": "images in [-1, 1]" if len(G.shape) == 3 else "points",
        "step": str(step),
        "weights": "ema" if ema else "raw",
        "config": json.dumps(config.to_dict(), sort_keys=True),
    }


def export(G: Generator, config: TrainConfig, step: int, ema: bool, format: Format) -> bytes:
    """The generator ``G`` (of a checkpoint at ``step`` with ``config``; ``ema``: its EMA
    weights) as the bytes of a ``format`` file."""
    modules = require(format)
    plain = plain_copy(G, config)
    meta = metadata(plain, config, step, ema)
    with warnings.catch_warnings():  # torch.jit's deprecation, the tracer's notes
        warnings.simplefilter("ignore")
        if format == "safetensors":
            return _safetensors(plain, meta, modules[0])
        if format == "onnx":
            return _onnx(plain, meta, modules[0])
        return _torchscript(plain, meta)


class _Forward(nn.Module):
    """``G`` with the inputs of an export: (z) or, conditional, (z, y)."""

    def __init__(self, G: Generator) -> None:
        super().__init__()
        self.G = G

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.G(z, y)


def example_inputs(G: Generator, n: int = 2) -> tuple[Tensor, ...]:
    """Inputs to trace ``G`` with: (z,) or (z, y)."""
    z = torch.zeros(n, G.latent_dim)
    return (z, torch.zeros(n, dtype=torch.long)) if G.num_classes else (z,)


def _torchscript(G: Generator, meta: dict[str, str]) -> bytes:
    with torch.no_grad():
        traced = torch.jit.trace(_Forward(G), example_inputs(G), check_trace=False)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={TORCHSCRIPT_METADATA: json.dumps(meta)})
    return buffer.getvalue()


def _onnx(G: Generator, meta: dict[str, str], onnx: ModuleType) -> bytes:
    names = ["z", "y"] if G.num_classes else ["z"]
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            _Forward(G),
            example_inputs(G),
            buffer,  # type: ignore[arg-type]  # a file object works too
            input_names=names,
            output_names=["samples"],
            dynamic_axes={name: {0: "batch"} for name in [*names, "samples"]},
            opset_version=ONNX_OPSET,
            dynamo=False,  # the TorchScript-based exporter: the dynamo one needs onnxscript
        )
    model = onnx.load_from_string(buffer.getvalue())
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    data: bytes = model.SerializeToString()
    return data


def _safetensors(G: Generator, meta: dict[str, str], safetensors_torch: ModuleType) -> bytes:
    tensors = {name: t.detach().contiguous() for name, t in G.state_dict().items()}
    used = {name for op in program(G) for name in op.get("tensors", {}).values()}
    header = {**meta, "layers": json.dumps(program(G))}
    data: bytes = safetensors_torch.save(
        {name: tensors[name] for name in sorted(used)}, metadata=header
    )
    return data


def program(G: Generator) -> list[dict[str, Any]]:
    """``G`` as a list of functional ops, the ``layers`` of a safetensors export, each
    {"op": name, "tensors": {argument: state-dict name}, …}, run in order on h = z:

    - ``embed_concat``: h = cat([h, embedding(y, weight)], 1)
    - ``linear``: h = linear(h, weight, bias); ``conv``/``conv_transpose``: conv2d /
      conv_transpose2d(h, weight, bias, stride, padding)
    - ``batch_norm``: h = batch_norm(h, running_mean, running_var, weight, bias, eps) (eval mode)
    - ``class_affine``: (γ, β) = embedding(y, weight) split in two, shaped (B, C, 1, …) like h;
      h = h · (1 + γ) + β
    - ``relu``, ``leaky_relu`` (slope), ``tanh``; ``reshape``: h = h.reshape(B, *shape)

    ValueError for a layer it does not know (a network this version does not build)."""
    ops: list[dict[str, Any]] = []
    if G.embed is not None:
        ops.append({"op": "embed_concat", "tensors": {"weight": "embed.weight"}})
    assert isinstance(G.net, nn.Sequential), type(G.net)
    for index, layer in enumerate(G.net):
        ops.append(_op(layer, f"net.{index}"))
    ops.append({"op": "reshape", "shape": list(G.shape)})
    return ops


def _op(layer: nn.Module, prefix: str) -> dict[str, Any]:
    """One layer of a generator's ``net`` as an op of ``program``."""

    def tensors(*names: str) -> dict[str, str]:
        return {n: f"{prefix}.{n}" for n in names if getattr(layer, n, None) is not None}

    if isinstance(layer, nn.Linear):
        return {"op": "linear", "tensors": tensors("weight", "bias")}
    if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d):
        if layer.dilation != (1, 1) or layer.groups != 1 or layer.output_padding != (0, 0):
            raise ValueError(f"{prefix}: only plain convolutions can be exported, not {layer}")
        kind = "conv" if isinstance(layer, nn.Conv2d) else "conv_transpose"
        return {
            "op": kind,
            "tensors": tensors("weight", "bias"),
            "stride": list(layer.stride),
            "padding": list(layer.padding),
        }
    if isinstance(layer, nn.BatchNorm1d | nn.BatchNorm2d):
        names = tensors("running_mean", "running_var", "weight", "bias")
        return {"op": "batch_norm", "tensors": names, "eps": layer.eps}
    if isinstance(layer, ClassAffine):
        return {"op": "class_affine", "tensors": {"weight": f"{prefix}.embed.weight"}}
    if isinstance(layer, nn.LeakyReLU):
        return {"op": "leaky_relu", "slope": layer.negative_slope}
    if isinstance(layer, nn.ReLU | nn.Tanh):
        return {"op": "relu" if isinstance(layer, nn.ReLU) else "tanh"}
    if isinstance(layer, nn.Unflatten):
        return {"op": "reshape", "shape": list(layer.unflattened_size)}
    raise ValueError(f"{prefix}: a {type(layer).__name__} layer cannot be exported")
