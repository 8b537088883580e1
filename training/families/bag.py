"""The ``bag`` family: a linear classifier over hashed word and character n-grams.

Text -> HashedNgramFeaturizer (skiff, the very code serving runs) -> bucket ids -> the
TF-IDF-weighted, L2-normalised sum of their table rows -> logits (head ``linear``: a row is one
score per label; head ``embedding``: fastText-style rows and a linear layer over their pool).

Most of a 2^18-row table is never trained: only the buckets the training texts hash to get a
gradient. :func:`prune` ships only trained rows (a further share with ``prune_rows``), ranked
by how far each moves the logits apart; every other bucket maps to one zero row, so an
untrained (for the embedding head, random) value never reaches a prediction.
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
from training.export import TORCHSCRIPT, QuantizationSettings
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

    A text is the TF-IDF-weighted sum of its n-grams' table rows, divided by the L2 norm of
    those weights: ``sum_i idf_i * row_i / sqrt(sum_i idf_i^2)``. A repeated n-gram counts
    once per occurrence, so this is a linear model over TF-IDF vectors normalised as scikit-
    learn's TfidfVectorizer does when every n-gram occurs once (bench_quality: 99.37 % on
    sms-spam where the plain mean reached 98.83 %). ``idf`` comes from training's document
    frequencies and ships in the graph, so serving needs no extra file.

    Head ``linear``: each row holds one score per label, the pooled rows plus a per-label bias
    are the logits (no bottleneck; rows start at zero so a feature training never saw adds
    nothing; the bias carries the labels' prior, which common words would otherwise learn: an
    appended "I read this on Monday." then cost 1 point instead of 0.3). Head ``embedding``: rows
    are ``embedding_dim`` wide (random start: a zero table and a zero classifier would have no
    gradient) and a linear layer classifies the pooled vector, with dropout.

    A plain Embedding with a masked sum (rather than EmbeddingBag) exports to a single ONNX
    Gather that onnxruntime quantizes to int8 (see FACTS.md on EmbeddingBag becoming a Loop).
    ``sparse=True`` keeps each step proportional to the ids in the batch instead of the whole
    2^18-row table.
    """

    def __init__(
        self,
        buckets: int,
        embedding_dim: int,
        num_labels: int,
        dropout: float = 0.0,
        head: str = "linear",
        idf: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.head, self.embedding_dim, self.num_labels = head, embedding_dim, num_labels
        width = num_labels if head == "linear" else embedding_dim
        self.embedding = nn.Embedding(buckets + 1, width, padding_idx=PADDING_ID, sparse=True)
        # idf ships as one byte per row (a step times a code) rather than four: the table's int8
        # rows take two bytes, so a float idf would be the bigger half of the model. Training
        # uses the same codes, so nothing is lost between training and serving.
        idf = torch.ones(buckets + 1) if idf is None else idf.to(torch.float32)
        step = float(idf.max()) / 255 if float(idf.max()) > 0 else 1.0
        self.register_buffer("idf_codes", torch.round(idf / step).clamp(0, 255).to(torch.uint8))
        self.register_buffer("idf_step", torch.tensor(step))
        self.classifier: nn.Module = LabelBias(num_labels)
        if head == "embedding":
            self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(embedding_dim, num_labels))
        with torch.no_grad():
            self.idf_codes[PADDING_ID] = 0
            if head == "linear":
                self.embedding.weight.zero_()
            else:
                bound = 1.0 / embedding_dim
                self.embedding.weight.uniform_(-bound, bound)
                self.embedding.weight[PADDING_ID].zero_()
                self.classifier[1].weight.zero_()
                self.classifier[1].bias.zero_()

    @property
    def idf(self) -> torch.Tensor:
        return self.idf_codes.to(torch.float32) * self.idf_step

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        # Written for onnxruntime's kernels (32 texts: 0.70 -> 0.33 ms): a flat index_select is
        # one Gather (tensor indexing exported as a GatherND, 2× slower), and the weighted sum
        # over a text's n-grams is one batched matrix product (a broadcast multiply and a sum
        # over the label axis were 6× slower).
        codes = self.idf_codes.index_select(0, token_ids.reshape(-1)).reshape(token_ids.shape)
        weights = codes.to(torch.float32) * self.idf_step  # padding's is 0
        summed = torch.bmm(weights.unsqueeze(1), self.embedding(token_ids)).squeeze(1)
        norm = torch.sqrt((weights * weights).sum(dim=1, keepdim=True)).clamp(min=1e-6)
        return self.classifier(summed / norm)

    def row_logits(self, rows: torch.Tensor) -> torch.Tensor:
        """What each table row adds to the labels' logits, before pooling (for pruning)."""
        table = self.embedding.weight.detach()[rows]
        if self.head == "linear":
            return table
        linear = self.classifier[1]
        return table @ linear.weight.detach().T


class LabelBias(nn.Module):
    """The linear head's only dense weights: one offset per label, added after pooling."""

    def __init__(self, num_labels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_labels))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return pooled + self.bias


def inverse_document_frequency(train: RaggedTokens, buckets: int) -> torch.Tensor:
    """Smoothed idf per bucket, as scikit-learn's TfidfTransformer: ln((1 + n) / (1 + df)) + 1,
    where df counts the training texts holding the bucket.

    A bucket no training text holds gets 0, as padding does: like a term outside a TF-IDF
    vocabulary it neither scores nor counts in the text's norm. Counting it would shrink every
    text full of unfamiliar n-grams towards the bias, i.e. the majority label (with accents on
    every "a" and "e", sms-spam lost 3.1 points that way)."""
    lengths = train.host_lengths
    texts = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    ids = train.values.cpu()[: len(texts)]  # the ragged values end with one padding id
    pairs = torch.unique(texts * (buckets + 1) + ids)  # each (text, bucket) once
    frequency = torch.bincount(pairs % (buckets + 1), minlength=buckets + 1).to(torch.float64)
    idf = torch.log((1.0 + len(lengths)) / (1.0 + frequency)) + 1.0
    idf[frequency == 0] = 0.0
    idf[PADDING_ID] = 0.0
    return idf.to(torch.float32)


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
    # The table's gradients are sparse (only the rows a batch touches). The linear head is a
    # convex problem that plain SGD walks steadily (Adam's per-row steps overfit rare n-grams:
    # 99.0 % and falling by epoch, where SGD held 99.4 %); the embedding head wants Adam.
    table = list(model.embedding.parameters())
    if model.head == "linear":
        # The bias gets a gradient from every text, a row only from the texts holding it: at the
        # table's step the prior swung from epoch to epoch (99.28, 98.20, 98.83 %); at 3 % of it,
        # it settles.
        groups = [{"params": table}, {"params": list(model.classifier.parameters()), "lr": learning_rate * 0.03}]
        return [torch.optim.SGD(groups, lr=learning_rate)]
    return [
        torch.optim.SparseAdam(table, lr=learning_rate),
        torch.optim.Adam(list(model.classifier.parameters()), lr=learning_rate, fused=device.type == "cuda"),
    ]


def prepare(data: LabelledTexts, hp: Hyperparameters, model_dir: Path) -> Family:
    featurizer = HashedNgramFeaturizer(hp.preprocessing())
    began = time.perf_counter()
    train = RaggedTokens.from_ragged(*featurizer.ragged(data.train_texts), PADDING_ID)
    validation = RaggedTokens.from_ragged(*featurizer.ragged(data.validation_texts), PADDING_ID)
    idf = inverse_document_frequency(train, hp.buckets)
    featurize_seconds = time.perf_counter() - began
    task = TrainingTask(
        build_model=lambda: BagOfNgrams(
            hp.buckets, hp.embedding_dim, len(data.labels), hp.dropout, head=hp.bag_head, idf=idf
        ),
        build_optimizers=_optimizers,
        inputs=lambda ids, mask: {"token_ids": ids},  # padding id 0 is the mask
        train=train,
        train_targets=data.train_targets,
        validation=validation,
        validation_targets=data.validation_targets,
    )
    return Family(
        task,
        featurizer,
        WithProbabilities,
        featurize_seconds,
        quantization=QUANTIZATION,
        onnx_exporter=TORCHSCRIPT,  # a dozen plain operations: 0.1 s instead of ~4 s
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
    codes = model.idf_codes.clone()
    idf = model.idf
    touched, counts = torch.unique(task.train.values.cpu(), return_counts=True)
    counts, touched = counts[touched != PADDING_ID], touched[touched != PADDING_ID]
    # A row's weight: how far apart it pushes the labels' logits (the head is linear in the
    # pooled vector), times its idf and how often training texts use it.
    logits = model.row_logits(touched)
    importance = (logits.max(1).values - logits.min(1).values) * idf[touched] * counts.to(logits.dtype)
    ranked = touched[torch.argsort(importance, descending=True, stable=True)]

    def accuracy_keeping(count: int | None) -> dict[str, float]:
        with torch.no_grad():
            if count is None:
                model.embedding.weight.copy_(table)
                model.idf_codes.copy_(codes)
            else:
                # Every unkept bucket will share one row, weighted as an n-gram training never saw
                # (idf 0: it neither scores nor counts in the norm); evaluated that way here, so
                # what is measured is exactly what ships.
                model.embedding.weight.zero_()
                model.embedding.weight[ranked[:count]] = table[ranked[:count]]
                model.idf_codes.zero_()
                model.idf_codes[ranked[:count]] = codes[ranked[:count]]
        cpu = torch.device("cpu")
        return {
            "validation_accuracy": evaluate(model, task, task.validation, task.validation_targets, cpu)[0],
            "train_accuracy": evaluate(model, task, task.train, task.train_targets, cpu)[0],
        }

    # As trained: untouched rows hold their random initial values.
    unpruned = accuracy_keeping(None)
    share = hp.prune_share()
    tried: list[dict[str, Any]] = []
    for candidate in AUTO_SHARES if share is None else (share,):
        count = min(len(ranked), max(1, math.ceil(candidate * len(ranked))))
        tried.append({"share": candidate, "rows": count, **accuracy_keeping(count)})
        # The validation split decides: it measures what pruning is for, answers on texts not
        # trained on. Training accuracy is recorded beside it; it falls as rare features go,
        # which is memorisation lost rather than quality (on sms-spam test accuracy even rose at 25 %).
        floor = unpruned["validation_accuracy"] - hp.prune_tolerance
        if share is not None or tried[-1]["validation_accuracy"] >= floor:
            break
    chosen = tried[-1]
    remap = BucketRemap(torch.sort(ranked[: chosen["rows"]]).values.numpy(), hp.buckets)
    kept = torch.from_numpy(remap.kept)
    compact = BagOfNgrams(remap.rows - 1, model.embedding_dim, model.num_labels, head=model.head)
    with torch.no_grad():
        compact.embedding.weight.zero_()  # padding and the row every unkept bucket maps to
        compact.embedding.weight[1 : remap.unseen_row] = table[kept]
        compact.idf_codes.zero_()
        compact.idf_codes[1 : remap.unseen_row] = codes[kept]
        compact.idf_step.copy_(model.idf_step)
        compact.classifier.load_state_dict(model.classifier.state_dict())
    remap.save(model_dir / KEPT_BUCKETS_FILE)
    report = {
        "method": "bag-table-rows",
        "prune_rows": hp.prune_rows,
        "tolerance": hp.prune_tolerance,
        "table_rows": table.shape[0],
        "trained_rows": len(ranked),
        "kept_rows": chosen["rows"],
        "unpruned_validation_accuracy": unpruned["validation_accuracy"],
        "unpruned_train_accuracy": unpruned["train_accuracy"],
        "validation_accuracy": chosen["validation_accuracy"],
        "train_accuracy": chosen["train_accuracy"],
        "tried": tried,
    }
    return Shipped(
        WithProbabilities(compact.eval()),
        featurizer.pruned(remap, KEPT_BUCKETS_FILE),
        (KEPT_BUCKETS_FILE,),
        report,
    )
