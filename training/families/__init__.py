"""Model families: each turns labelled texts into a :class:`~training.loop.TrainingTask` for the
one training loop, and names its featurizer (the very one serving runs) and what gets exported.

A family module ``training.families.<model_family>`` has one entry point,
``prepare(data, hp, model_dir) -> Family``; families that carry files into the artifact (a
tokenizer) write them into ``model_dir``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skiff.model.features import Featurizer
from training.export import DYNAMO, QuantizationSettings
from training.loop import TrainingTask


@dataclass(frozen=True)
class LabelledTexts:
    """The training and validation texts with their label indices into ``labels``: the loop
    scores the validation rows after every epoch, and the families decide on them (which
    table rows ship)."""

    train_texts: list[str]
    train_targets: torch.Tensor
    validation_texts: list[str]
    validation_targets: torch.Tensor
    labels: list[str]


@dataclass(frozen=True)
class Shipped:
    """What the artifact holds, decided once training is over."""

    exportable: nn.Module
    """What the ONNX file holds (inputs -> probabilities)."""
    featurizer: Featurizer
    """The featurizer serving runs with this model (a pruned model's remaps its ids)."""
    featurizer_files: tuple[str, ...] = ()
    """Files the featurizer reads from the artifact directory (listed in the manifest)."""
    compression: dict[str, Any] = field(default_factory=dict)
    """What was removed from the trained model and what it cost, for metrics.json."""


@dataclass(frozen=True)
class Family:
    task: TrainingTask
    featurizer: Featurizer
    exportable: Callable[[nn.Module], nn.Module]
    """Wraps the trained model into what the ONNX file holds (inputs -> probabilities)."""
    featurize_seconds: float = 0.0
    featurizer_files: tuple[str, ...] = ()
    """Files the featurizer reads from the artifact directory (listed in the manifest)."""
    quantization: QuantizationSettings = QuantizationSettings()
    onnx_exporter: str = DYNAMO
    """training.export's exporter for this family's graph."""
    fuse_graph: Callable[[Path], dict[str, int]] | None = None
    """Rewrites the exported fp32 graph in place with fused kernels before it is quantized;
    returns what it fused (recorded in metrics.json)."""
    compress: Callable[[nn.Module], Shipped] | None = None
    """Families that shrink the trained model before export (bag: table pruning) set this."""

    def ship(self, model: nn.Module) -> Shipped:
        """The trained model as it will be exported and served."""
        if self.compress is not None:
            return self.compress(model)
        return Shipped(self.exportable(model), self.featurizer, self.featurizer_files)
