"""Model families: each turns labelled texts into a :class:`~training.loop.TrainingTask` for the
one training loop, and names its featurizer (the very one serving runs) and what gets exported.

A family module ``training.families.<model_family>`` has one entry point,
``prepare(data, hp, model_dir) -> Family``; families that carry files into the artifact (a
tokenizer) write them into ``model_dir``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from skiff.model.features import Featurizer
from training.export import QuantizationSettings
from training.loop import TrainingTask


@dataclass(frozen=True)
class LabelledTexts:
    """The training and evaluation texts with their label indices into ``labels``."""

    train_texts: list[str]
    train_targets: torch.Tensor
    eval_texts: list[str]
    eval_targets: torch.Tensor
    labels: list[str]


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

