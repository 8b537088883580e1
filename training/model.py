"""The fastText-style classifier: mean of hashed n-gram embeddings, then a linear layer."""

from __future__ import annotations

import torch
from torch import nn

from skiff.features import PADDING_ID


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
