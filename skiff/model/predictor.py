"""ONNX Runtime inference over a verified artifact. Never imports torch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from skiff.cpus import available_cpus
from skiff.model.artifact import MODEL_INT8, ModelArtifact, load_artifact
from skiff.model.features import Featurizer, featurizer_from_spec

OUTPUT_NAME = "probabilities"
"""Every exported model answers per-label probabilities under this output name."""

MAX_BATCH_TEXTS = 64
"""The most texts one /predict request carries by default (SKIFF_MAX_TEXTS); the training job
checks its int8 model at batch 1 and at this batch size."""


@dataclass(frozen=True)
class Prediction:
    label: str
    scores: dict[str, float]


def session_options(threads: int | None) -> ort.SessionOptions:
    """One intra-op thread per available CPU by default; never more than the process may use."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, threads if threads is not None else available_cpus())
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


class Predictor:
    """Featurize with the artifact's own spec, run the ONNX model, name the labels."""

    def __init__(
        self,
        artifact: ModelArtifact,
        model_file: str = MODEL_INT8,
        threads: int | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        self.artifact = artifact
        self.labels = artifact.labels
        self.featurizer: Featurizer = featurizer_from_spec(artifact.preprocessing, artifact.directory)
        self.session = ort.InferenceSession(
            str(artifact.path(model_file)), sess_options=session_options(threads), providers=list(providers)
        )

    @classmethod
    def from_directory(
        cls, directory: str | Path, model_file: str = MODEL_INT8, threads: int | None = None
    ) -> Predictor:
        return cls(load_artifact(directory, only=[model_file]), model_file, threads)

    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        (probabilities,) = self.session.run([OUTPUT_NAME], self.featurizer.encode(texts))
        return probabilities

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        probabilities = self.probabilities(texts)
        return [
            Prediction(
                label=self.labels[int(row.argmax())],
                scores={label: round(float(p), 6) for label, p in zip(self.labels, row, strict=True)},
            )
            for row in probabilities
        ]
