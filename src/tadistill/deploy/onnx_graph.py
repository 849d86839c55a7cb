"""An encoder as an ONNX graph: export with dynamic batch and sequence axes, int8 dynamic
quantisation, and a runner that calls the graph under onnxruntime like the PyTorch model.

The export traces the model with the TorchScript exporter (`torch.onnx.export(dynamo=False)`):
it needs no package beyond torch, and for these encoders its graph matches PyTorch to float
rounding. The dynamo exporter would need onnxscript.
"""

from __future__ import annotations

import inspect
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tadistill.errors import ModelError, TadistillError

HIDDEN = "last_hidden_state"
LOGITS = "logits"
# the tensors a tokenizer hands an encoder, in the graph's input order
_TOKENIZER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# two texts of different lengths: the traced batch holds padding, so the graph is traced on the masked path
_TRACE_TEXTS = ("A short text.", "A longer text, so that the first one of this batch is padded to its length.")


def require_onnxruntime():
    """The onnxruntime module, or an error that says how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise TadistillError('onnxruntime is not installed; run: pip install -c constraints.txt -e ".[export]"') from None
    return onnxruntime


def graph_inputs(model: nn.Module) -> list[str]:
    """The tokenizer tensors the model uses: token_type_ids only where the model's forward
    takes them and its config has more than one segment type (BERT, not RoBERTa/XLM-R)."""
    accepted = inspect.signature(model.forward).parameters
    names = [name for name in _TOKENIZER_INPUTS if name in accepted]
    if "token_type_ids" in names and getattr(model.config, "type_vocab_size", 0) <= 1:
        names.remove("token_type_ids")
    return names


class _GraphForward(nn.Module):
    """Positional tensors in (as the exporter passes them), one named output tensor out."""

    def __init__(self, model: nn.Module, input_names: list[str], output: str):
        super().__init__()
        self.model = model
        self.input_names = input_names
        self.output = output

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        inputs = dict(zip(self.input_names, tensors))
        mask = inputs["attention_mask"]
        # The additive 4D mask is built here rather than by transformers' mask helpers: those
        # take data-dependent shortcuts (no mask at all for an unpadded batch) that tracing
        # would bake into the graph.
        inputs["attention_mask"] = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min  # (B, 1, 1, n)
        return getattr(self.model(**inputs), self.output)


def export_onnx(model: nn.Module, tokenizer, path: Path, opset: int, output: str = HIDDEN) -> list[str]:
    """Write `model` (fp32, eval) as an ONNX graph at `path`; returns the graph's input names.

    `output` is `last_hidden_state` (B, n, d) of an encoder or `logits` (B, labels) of a
    sequence classifier; batch and sequence axes are dynamic.
    """
    names = graph_inputs(model)
    sample = tokenizer(list(_TRACE_TEXTS), padding=True, return_tensors="pt")
    tensors = tuple(sample[name] if name in sample else torch.zeros_like(sample["input_ids"]) for name in names)
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    axes[output] = {0: "batch", 1: "sequence"} if output == HIDDEN else {0: "batch"}
    # eval() on the wrapper too: the exporter restores the wrapper's mode afterwards, and a
    # wrapper left in training mode would switch the model's dropout on
    wrapper = _GraphForward(model.float().eval(), names, output).eval()
    with warnings.catch_warnings():
        # the tracer's notes on Python branches it evaluated once; the traced masked path is the one we want
        warnings.simplefilter("ignore")
        try:
            with torch.no_grad():
                torch.onnx.export(
                    wrapper, tensors, str(path), input_names=names, output_names=[output],
                    dynamic_axes=axes, opset_version=opset, dynamo=False,
                )
        except Exception as error:  # the exporter's errors name the unsupported op
            raise ModelError(f"torch.onnx.export failed for {type(model).__name__} at opset {opset}: {error}") from None
    return names


def quantize_int8(fp32_path: Path, int8_path: Path) -> None:
    """Dynamic int8 quantisation: int8 weights of the MatMuls (and the embedding Gathers),
    activations quantised per call from their observed range; no calibration data needed.

    Weights are quantised per output channel: on the quickstart student (3 x 384) per-tensor
    scales left a mean cosine of 0.967 to the fp32 embeddings, per-channel ones 0.997, at the
    same size on disk."""
    require_onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # it logs advice to run a shape-inference pre-pass first, which dynamic quantisation does not need
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)


class OnnxModel:
    """An ONNX graph under onnxruntime (CPU), called like the PyTorch model with the tensors of
    its tokenizer; returns the graph's one output as a torch tensor. `config` is the model's
    Hugging Face config (the timing loop reads its vocabulary size)."""

    device = torch.device("cpu")

    def __init__(self, path: str | Path, config=None, threads: int | None = None):
        ort = require_onnxruntime()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3  # warnings about unused initializers of a trimmed graph are noise
        self.path = Path(path)
        self.config = config
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [node.name for node in self.session.get_inputs()]
        self.output_name = self.session.get_outputs()[0].name

    def __call__(self, **inputs: torch.Tensor) -> torch.Tensor:
        ids = inputs["input_ids"]
        feed = {
            # a tokenizer that makes no token_type_ids means one segment: all zeros, as the model defaults to
            name: (inputs[name] if name in inputs else torch.zeros_like(ids)).cpu().numpy().astype(np.int64)
            for name in self.input_names
        }
        return torch.from_numpy(self.session.run([self.output_name], feed)[0])
