"""The ``bag`` family: a fastText-style classifier over hashed word and character n-grams.

Text -> HashedNgramFeaturizer (skiff, the very code serving runs) -> bucket ids -> mean of
their embeddings -> linear layer.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from skiff.model.features import PADDING_ID, HashedNgramFeaturizer
from skiff.model.hyperparameters import Hyperparameters
from training.batches import RaggedTokens
from training.families import Family, LabelledTexts
from training.loop import TrainingTask


class BagOfNgrams(nn.Module):
    """Input: padded bucket ids [batch, length] (0 = padding). Output: logits [batch, labels].

    A plain Embedding with a masked mean (rather than EmbeddingBag) exports to a single
    ONNX Gather that onnxruntime's dynamic quantization turns into int8 (see FACTS.md on
    EmbeddingBag becoming a Loop). ``sparse=True`` keeps each step proportional to the ids
    in the batch instead of the whole 2^18-row table.
    """

    def __init__(self, buckets: int, embedding_dim: int, num_labels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(buckets + 1, embedding_dim, padding_idx=PADDING_ID, sparse=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(embedding_dim, num_labels)
        bound = 1.0 / embedding_dim
        with torch.no_grad():
            self.embedding.weight.uniform_(-bound, bound)
            self.embedding.weight[PADDING_ID].zero_()
            self.classifier.weight.zero_()
            self.classifier.bias.zero_()

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        mask = (token_ids != PADDING_ID).unsqueeze(-1).to(self.embedding.weight.dtype)
        summed = (self.embedding(token_ids) * mask).sum(dim=1)
        mean = summed / mask.sum(dim=1).clamp(min=1.0)
        return self.classifier(self.dropout(mean))


class WithProbabilities(nn.Module):
    """What gets exported: the classifier followed by softmax, so serving needs no math."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(token_ids).float(), dim=-1)


def _optimizers(model: nn.Module, learning_rate: float, device: torch.device) -> list[torch.optim.Optimizer]:
    assert isinstance(model, BagOfNgrams)
    # The table's gradients are sparse (only the rows a batch touches); SparseAdam updates just those.
    return [
        torch.optim.SparseAdam(list(model.embedding.parameters()), lr=learning_rate),
        torch.optim.Adam(list(model.classifier.parameters()), lr=learning_rate, fused=device.type == "cuda"),
    ]


def prepare(data: LabelledTexts, hp: Hyperparameters, model_dir: Path) -> Family:
    featurizer = HashedNgramFeaturizer(hp.preprocessing())
    began = time.perf_counter()
    train = RaggedTokens.from_lists([featurizer.ids(t) for t in data.train_texts], PADDING_ID)
    evaluation = RaggedTokens.from_lists([featurizer.ids(t) for t in data.eval_texts], PADDING_ID)
    featurize_seconds = time.perf_counter() - began
    task = TrainingTask(
        build_model=lambda: BagOfNgrams(hp.buckets, hp.embedding_dim, len(data.labels), hp.dropout),
        build_optimizers=_optimizers,
        inputs=lambda ids, mask: {"token_ids": ids},  # padding id 0 is the mask
        train=train,
        train_targets=data.train_targets,
        evaluation=evaluation,
        eval_targets=data.eval_targets,
    )
    return Family(task, featurizer, WithProbabilities, featurize_seconds)
