"""ONNX export, int8 quantization (dynamic or static) and the fp32/int8 parity check."""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from skiff.model.features import Featurizer
from skiff.model.predictor import OUTPUT_NAME, session_options

log = logging.getLogger(__name__)


TORCHSCRIPT, DYNAMO = "torchscript", "dynamo"
ONNX_OPSET = 20
"""The opset both exporters write (the dynamo exporter's own for torch 2.13)."""


def export_onnx(exported: torch.nn.Module, path: Path, example: dict[str, np.ndarray], exporter: str = DYNAMO) -> None:
    """Export to one self-contained ONNX file; every input has a dynamic batch and length.

    ``exported`` answers probabilities; its forward takes the inputs named as in ``example``
    (the featurizer's output), in that order. ``exporter``: ``dynamo`` (torch.export) or
    ``torchscript``, the tracer torch has deprecated but still ships: for a graph of a dozen
    plain operations it takes 0.1 s, where the dynamo exporter spent ~4 s here (registering its
    op library, tracing and decomposing; benchmarks/RESULTS.md, "Bag training time"), and its
    graph of a BERT encoder is the one onnxruntime's attention fusion recognises
    (:func:`fuse_attention`).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters are chatty about internals we do not use
        inputs = tuple(torch.from_numpy(array) for array in example.values())
        if exporter == TORCHSCRIPT:
            torch.onnx.export(
                exported.eval().cpu(),
                inputs,
                str(path),
                input_names=list(example),
                output_names=[OUTPUT_NAME],
                dynamic_axes={name: {0: "batch", 1: "length"} for name in example},
                opset_version=ONNX_OPSET,
                dynamo=False,
            )
            return
        if exporter != DYNAMO:
            raise ValueError(f"expected exporter {DYNAMO!r} or {TORCHSCRIPT!r} (got: {exporter!r})")
        batch = torch.export.Dim("batch", min=1)
        length = torch.export.Dim("length", min=1)
        torch.onnx.export(
            exported.eval().cpu(),
            inputs,
            str(path),
            input_names=list(example),
            output_names=[OUTPUT_NAME],
            dynamic_shapes={name: {0: batch, 1: length} for name in example},
            external_data=False,
            dynamo=True,
            verbose=False,
        )


CONTRIB_DOMAIN = "com.microsoft"
"""onnxruntime's own operators (MultiHeadAttention, SkipLayerNormalization…)."""


def fuse_attention(path: Path, *, num_heads: int, hidden_size: int) -> dict[str, int]:
    """Rewrite a BERT-style encoder's fp32 graph in place with onnxruntime's fused kernels
    (MultiHeadAttention, SkipLayerNormalization, BiasGelu); return how many of each.

    An exported encoder spells attention and layer norms out in ~300 small operators; at one
    short text, their per-operator cost is a good part of the run (benchmarks/RESULTS.md,
    "Transformer graph: fused attention"). Two of the fusions are held back on purpose:
    ``Attention`` packs the Q, K and V weights inside one operator that static quantization
    leaves fp32 (onnxruntime has no static QAttention), so ``MultiHeadAttention`` takes its
    place and the projections stay MatMuls that become int8; ``EmbedLayerNormalization`` would
    carry the word-embedding table as a float input, where a plain Gather is quantized to int8
    rows. A graph the fusion does not recognise is written back unchanged in meaning.
    """
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.use_multi_head_attention = True
    options.enable_embed_layer_norm = False
    fused = optimizer.optimize_model(
        str(path),
        model_type="bert",
        num_heads=num_heads,
        hidden_size=hidden_size,
        optimization_options=options,
        opt_level=0,  # the fusions only; onnxruntime applies its own graph optimizations at load
    )
    fused.save_model_to_file(str(path))
    return {name: count for name, count in fused.get_fused_operator_statistics().items() if count}


@dataclass(frozen=True)
class QuantizationSettings:
    """onnxruntime quantization options; recorded in metrics.json.

    ``dynamic`` computes each activation's scale from the tensor at run time, so a text's
    scores move with whatever it is batched with wherever an activation is quantized (the bag
    family quantizes only its table lookup, whose output scale is fixed, and stays invariant).
    ``static`` fixes every scale beforehand from calibration inputs (one training text per
    run): no scale depends on the batch. Its ``op_types`` must leave the attention mask's
    Add/Softmax in float: calibrated on unpadded texts, a fixed scale would clip the mask's
    large negatives and let padding leak into attention.
    """

    method: str = "dynamic"
    weight_type: str = "QInt8"
    per_channel: bool = False
    # reduce_range avoids U8S8 saturation on AVX2-only x86 (onnxruntime docs); VNNI/ARM need not.
    reduce_range: bool = False
    op_types: tuple[str, ...] | None = None
    """Only these operator types are quantized (None: every type onnxruntime supports)."""
    format: str = "QOperator"
    """static only: QLinear* ops (QOperator), or QuantizeLinear/DequantizeLinear pairs (QDQ)."""
    calibration_texts: int = 256

    def to_dict(self) -> dict[str, Any]:
        described: dict[str, Any] = {
            "method": self.method,
            "weight_type": self.weight_type,
            "per_channel": self.per_channel,
            "reduce_range": self.reduce_range,
            "op_types": list(self.op_types) if self.op_types is not None else None,
        }
        if self.method == "static":
            described |= {"format": self.format, "calibration_texts": self.calibration_texts}
        return described


class _Calibration(CalibrationDataReader):
    """One featurized text per run, as quantize_static reads them."""

    def __init__(self, inputs: Iterable[dict[str, np.ndarray]]) -> None:
        self.inputs = iter(inputs)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.inputs, None)


def quantize_int8(
    fp32_path: Path,
    int8_path: Path,
    settings: QuantizationSettings = QuantizationSettings(),
    calibration: Iterable[dict[str, np.ndarray]] = (),
) -> None:
    """int8 from fp32; ``static`` needs ``calibration``: the featurized inputs its scales come from."""
    op_types = list(settings.op_types) if settings.op_types is not None else None
    if settings.method == "dynamic":
        quantize_dynamic(
            str(fp32_path),
            str(int8_path),
            weight_type=QuantType[settings.weight_type],
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            op_types_to_quantize=op_types,
        )
        return
    if settings.method != "static":
        raise ValueError(f"expected quantization method dynamic or static (got: {settings.method!r})")
    with tempfile.TemporaryDirectory() as work:
        prepared = Path(work) / "prepared.onnx"
        # ONNX shape inference and graph cleanup first, as onnxruntime recommends for static
        # quantization. onnxruntime's own operators have no ONNX shape function: only its
        # symbolic pass types their outputs, and calibration skips an untyped tensor (its
        # consumer then cannot be quantized). That pass cannot finish on the dynamo export's
        # dynamic shapes, so it runs only where those operators are.
        contrib = any(node.domain == CONTRIB_DOMAIN for node in onnx.load(str(fp32_path)).graph.node)
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=not contrib, auto_merge=contrib)
        quantize_static(
            str(prepared),
            str(int8_path),
            _Calibration(calibration),
            quant_format=QuantFormat[settings.format],
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            weight_type=QuantType[settings.weight_type],
            activation_type=QuantType.QInt8 if settings.format == "QDQ" else QuantType.QUInt8,
            op_types_to_quantize=op_types,
        )


def onnx_probabilities(path: Path, featurizer: Featurizer, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
    """Probabilities of an exported model, featurized exactly as serving does, in batches."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), sess_options=session_options(None), providers=["CPUExecutionProvider"])
    parts = [
        session.run([OUTPUT_NAME], featurizer.encode(texts[i : i + batch_size]))[0]
        for i in range(0, len(texts), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def parity(fp32: np.ndarray, int8_by_batch: dict[int, np.ndarray], y_true: np.ndarray) -> dict[str, Any]:
    """How far the int8 model strays from fp32 on the same rows, at each batch size it was run
    with (serving sees batch 1 and the API's largest): the worst batch size counts.

    ``batch_*`` say whether the int8 model answers a text the same whatever it is batched with.
    """
    fp32_pred = fp32.argmax(1)
    fp32_accuracy = float((fp32_pred == y_true).mean())
    per_batch = {
        batch: {
            "label_agreement": float((fp32_pred == scores.argmax(1)).mean()),
            "max_score_difference": float(np.abs(fp32 - scores).max()),
            "int8_accuracy": float((scores.argmax(1) == y_true).mean()),
        }
        for batch, scores in sorted(int8_by_batch.items())
    }
    worst = min(per_batch.values(), key=lambda row: row["label_agreement"])
    first, *others = [int8_by_batch[b] for b in sorted(int8_by_batch)]
    return {
        "label_agreement": worst["label_agreement"],
        "max_score_difference": max(row["max_score_difference"] for row in per_batch.values()),
        "fp32_accuracy": fp32_accuracy,
        "int8_accuracy": worst["int8_accuracy"],
        "accuracy_delta": worst["int8_accuracy"] - fp32_accuracy,
        "rows": int(len(y_true)),
        "batch_sizes": {str(batch): row for batch, row in per_batch.items()},
        "batch_label_agreement": min(
            (float((first.argmax(1) == other.argmax(1)).mean()) for other in others), default=1.0
        ),
        "batch_max_score_difference": max((float(np.abs(first - other).max()) for other in others), default=0.0),
    }


def batch1_latency_ms(path: Path, featurizer: Featurizer, texts: Sequence[str], repeats: int = 200) -> dict[str, Any]:
    """Median time to featurize and score one text on one thread (what a warm Lambda does per
    single-text request), measured on the machine that trained the model."""
    import time

    import onnxruntime as ort

    session = ort.InferenceSession(str(path), sess_options=session_options(1), providers=["CPUExecutionProvider"])
    sample = [texts[i % len(texts)] for i in range(repeats)] if texts else []
    for text in sample[:20]:  # warm-up: first runs allocate
        session.run([OUTPUT_NAME], featurizer.encode([text]))
    timings = []
    for text in sample:
        began = time.perf_counter()
        session.run([OUTPUT_NAME], featurizer.encode([text]))
        timings.append((time.perf_counter() - began) * 1000)
    return {
        "batch1_p50_ms": float(np.median(timings)) if timings else None,
        "threads": 1,
        "runs": len(timings),
        "measures": "featurize + onnxruntime, one text",
    }
