"""The ``bag`` family: a fastText-style classifier over hashed word and character n-grams.

Text -> HashedNgramFeaturizer (skiff, the very code serving runs) -> bucket ids -> mean of
their embeddings -> linear layer.

Most of a 2^18-row table is never trained: only the buckets the training texts hash to get a
gradient. :func:`prune` ships only trained rows (a further share with ``prune_rows``), ranked
by how far each moves the logits apart; every other bucket maps to one zero row, so random
initial values never reach a prediction.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skiff.model.features import PADDING_ID, BucketRemap, HashedNgramFeaturizer
from skiff.model.hyperparameters import Hyperparameters
from training.batches import RaggedTokens
from training.calibration import CalibratedSoftmax
from training.export import QuantizationSettings
from training.families import Family, LabelledTexts, Shipped
from training.loop import TrainingTask, evaluate

KEPT_BUCKETS_FILE = "kept_buckets.npy"
AUTO_SHARES = (0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 0.7, 1.0)
"""The shares of trained rows ``prune_rows=auto`` tries, smallest first."""

QUANTIZATION = QuantizationSettings(op_types=("Gather",))
"""Only the table becomes int8 (its scale is fixed at export). The classifier stays fp32: it is
a few hundred weights, and quantizing its input would take a scale from each batch's values,
so a text's scores would depend on what it is batched with."""


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
        self.probabilities = CalibratedSoftmax()

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.probabilities(self.classifier(token_ids))


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
    return Family(
        task,
        featurizer,
        WithProbabilities,
        featurize_seconds,
        quantization=QUANTIZATION,
        compress=lambda model: prune(model, task, hp, featurizer, model_dir),
    )


def prune(
    trained: nn.Module, task: TrainingTask, hp: Hyperparameters, featurizer: HashedNgramFeaturizer, model_dir: Path
) -> Shipped:
    """Keep the table rows that matter (see the module docstring); write the kept bucket ids
    into ``model_dir`` and return the compact model with the featurizer that remaps to it."""
    assert isinstance(trained, BagOfNgrams)
    model = copy.deepcopy(trained).cpu().eval()
    table = model.embedding.weight.detach().clone()
    touched, counts = torch.unique(task.train.values, return_counts=True)
    counts, touched = counts[touched != PADDING_ID], touched[touched != PADDING_ID]
    # A row's weight: how far apart it pushes the labels' logits (the head is linear), times how
    # often training texts use it.
    logits = table[touched] @ model.classifier.weight.detach().T
    importance = (logits.max(1).values - logits.min(1).values) * counts.to(logits.dtype)
    ranked = touched[torch.argsort(importance, descending=True, stable=True)]

    def accuracy_keeping(count: int | None) -> dict[str, float]:
        with torch.no_grad():
            if count is None:
                model.embedding.weight.copy_(table)
            else:
                model.embedding.weight.zero_()
                model.embedding.weight[ranked[:count]] = table[ranked[:count]]
        cpu = torch.device("cpu")
        return {
            "eval_accuracy": evaluate(model, task, task.evaluation, task.eval_targets, cpu),
            "train_accuracy": evaluate(model, task, task.train, task.train_targets, cpu),
        }

    # As trained: untouched rows hold their random initial values.
    unpruned = accuracy_keeping(None)
    share = hp.prune_share()
    tried: list[dict[str, Any]] = []
    for candidate in AUTO_SHARES if share is None else (share,):
        count = min(len(ranked), max(1, math.ceil(candidate * len(ranked))))
        tried.append({"share": candidate, "rows": count, **accuracy_keeping(count)})
        # The eval split decides: it measures what pruning is for, answers on texts not trained
        # on. Training accuracy is recorded beside it; it falls as rare features go, which is
        # memorisation lost rather than quality (on sms-spam test accuracy even rose at 25 %).
        if share is not None or tried[-1]["eval_accuracy"] >= unpruned["eval_accuracy"] - hp.prune_tolerance:
            break
    chosen = tried[-1]
    remap = BucketRemap(torch.sort(ranked[: chosen["rows"]]).values.numpy(), hp.buckets)
    compact = BagOfNgrams(remap.rows - 1, model.embedding.embedding_dim, model.classifier.out_features)
    with torch.no_grad():
        compact.embedding.weight.zero_()  # padding and the row every unkept bucket maps to
        compact.embedding.weight[1 : remap.unseen_row] = table[torch.from_numpy(remap.kept)]
        compact.classifier.load_state_dict(model.classifier.state_dict())
    remap.save(model_dir / KEPT_BUCKETS_FILE)
    report = {
        "method": "bag-table-rows",
        "prune_rows": hp.prune_rows,
        "tolerance": hp.prune_tolerance,
        "table_rows": table.shape[0],
        "trained_rows": len(ranked),
        "kept_rows": chosen["rows"],
        "unpruned_eval_accuracy": unpruned["eval_accuracy"],
        "unpruned_train_accuracy": unpruned["train_accuracy"],
        "eval_accuracy": chosen["eval_accuracy"],
        "train_accuracy": chosen["train_accuracy"],
        "tried": tried,
    }
    return Shipped(
        WithProbabilities(compact.eval()),
        featurizer.pruned(remap, KEPT_BUCKETS_FILE),
        (KEPT_BUCKETS_FILE,),
        report,
    )
