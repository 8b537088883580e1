"""Training hyperparameters: one typed definition for the job, the CLI and the job launcher.

SageMaker passes hyperparameters to the entry point as ``--name value`` strings; the
launcher writes them with :meth:`Hyperparameters.to_strings` and the training script reads
them back with :meth:`Hyperparameters.from_strings`, so the two can never drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from skiff.errors import ConfigError
from skiff.model.features import HashedNgramSpec

MODEL_FAMILIES = ("bag", "transformer")
CALIBRATIONS = ("temperature", "none")
BAG_HEADS = ("linear", "embedding")
LR_SCHEDULES = ("constant", "linear", "cosine")
CLASS_WEIGHTINGS = ("none", "balanced")
FAMILY_DEFAULTS = {
    # The linear head trains with plain SGD (a large step suits its TF-IDF-normalized inputs,
    # whose norm is 1); the embedding head with Adam. From 5-fold cross-validation on sms-spam
    # train.csv (benchmarks/bench_bag_defaults.py, RESULTS.md "Model quality"): 300 × 20 epochs
    # scored best there (99.19 %) but was unstable on the small demo data without char n-grams
    # (eval accuracy 93-97 % from epoch to epoch, 99.1 % at 30), so the default is the CV's best
    # at a step that held on both: 30 × 10 epochs (CV 99.06 %). Balanced class weights raised
    # that row's CV to 99.17 % (bench_bag_defaults.py --grid weighting; 99.13 vs 99.17 % at 100),
    # and its test accuracy to the best peer's (RESULTS.md "Balanced class weights for the bag").
    ("bag", "linear"): {
        "epochs": 10,
        "learning_rate": 30.0,
        "warmup_fraction": 0.0,
        "lr_schedule": "constant",
        "class_weighting": "balanced",
    },
    ("bag", "embedding"): {
        "epochs": 10,
        "learning_rate": 0.02,
        "warmup_fraction": 0.0,
        "lr_schedule": "constant",
        "class_weighting": "none",
    },
    # Fine-tuning a pretrained encoder wants few epochs and a small step, warmed up (Adam's
    # moment estimates are noise for the first steps, and a full step then can wreck the
    # pretrained weights) and decayed linearly to zero, as BERT was fine-tuned.
    # Balanced weights cost it 4 test texts (RESULTS.md "Transformer family").
    ("transformer", None): {
        "epochs": 3,
        "learning_rate": 5e-5,
        "warmup_fraction": 0.1,
        "lr_schedule": "linear",
        "class_weighting": "none",
    },
}

_RESOLVED_FIELDS = frozenset(name for defaults in FAMILY_DEFAULTS.values() for name in defaults)
"""The fields that None resolves from FAMILY_DEFAULTS (class_weighting also from teacher_version)."""

_VALUE_CHOICES = {"class_weighting": CLASS_WEIGHTINGS}
"""Optional fields for which the string "none" is a value, not "the family's default"."""


BOUNDS: dict[str, tuple[float, float]] = {
    "epochs": (1, 1000),
    "batch_size": (1, 65536),
    "learning_rate": (1e-7, 1000.0),  # plain SGD on the bag's linear head takes steps of 10 and more
    "embedding_dim": (1, 4096),
    "dropout": (0.0, 1.0),
    "buckets": (2, 1 << 24),
    "word_ngrams": (1, 5),
    "max_features": (1, 100_000),
    "eval_fraction": (0.0, 1.0),
    "validation_fraction": (0.0, 0.5),
    "early_stopping_patience": (0, 1000),
    "seed": (0, 2**32 - 1),
    "min_parity_agreement": (0.0, 1.0),
    "max_length": (2, 4096),
    "gradient_accumulation_steps": (1, 1024),
    "prune_tolerance": (0.0, 0.1),
    "encoder_layers": (0, 128),
    "distill_temperature": (1.0, 20.0),
    "distill_weight": (0.0, 1.0),
    "distill_augment": (0, 20),
    "vocabulary_min_count": (0, 1_000_000),
    "warmup_fraction": (0.0, 0.5),
}
"""Inclusive ranges, checked (NaN and infinities refused) wherever hyperparameters enter: the CLI,
the stack's config, the job launcher and the job itself all build this class."""
MAX_TABLE_WEIGHTS = 1 << 28  # float32: 1 GiB
_VERSION_NAME = re.compile(r"[A-Za-z0-9._-]{0,100}")
"""teacher_version lands in an S3 key (models/<version>/): nothing that could leave that prefix."""


@dataclass(frozen=True)
class Hyperparameters:
    """None for ``epochs`` / ``learning_rate`` means the model family's (and bag head's) default
    (FAMILY_DEFAULTS).

    ``batch_size`` None lets the job choose for its device (32 on CPU, larger on a GPU, with the
    learning rate scaled to match; training/device.py), and the job records what it chose.
    """

    model_family: str = "bag"
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    embedding_dim: int = 64
    dropout: float = 0.1
    buckets: int = 1 << 18
    word_ngrams: int = 2
    char_ngrams: str = "2-5"
    max_features: int = 2048
    eval_fraction: float = 0.2
    # The rows training decides on, held out from the training rows by a hash of the text
    # (training/pipeline.py): the epoch that ships (the best on it, by accuracy then loss), the
    # temperature, prune_rows=auto's choice. Never the eval split, which may be the user's test
    # set. 0: no validation split; those decisions then fall back to the eval split, and the
    # last epoch ships.
    validation_fraction: float = 0.1
    # Stop once this many epochs in a row did not beat the best on the validation split (0:
    # run every epoch). The best epoch ships either way.
    early_stopping_patience: int = 3
    # The learning rate rises linearly from ~0 over the first warmup_fraction of all optimizer
    # steps (every epoch's, early stopping or not), then follows lr_schedule down: "constant"
    # stays, "linear" falls to zero at the last step, "cosine" along half a cosine.
    # None: the family's default (FAMILY_DEFAULTS).
    warmup_fraction: float | None = None
    lr_schedule: str | None = None
    # "balanced" weighs each label's rows in the loss by rows / (labels × that label's rows),
    # so a rare label counts as much as a common one; "none" weighs every row alike. None: the
    # family's default, and "none" for a student of a teacher_version.
    class_weighting: str | None = None
    seed: int = 13
    min_parity_agreement: float = 0.99
    mixed_precision: bool = True
    length_bucketing: bool = True  # batches of similar lengths: little padding (training/batches.py)
    # "temperature": the served scores are softmax(logits / T), T fitted on the validation split
    # (training/calibration.py); "none" ships the raw scores.
    calibration: str = "temperature"
    # bag family: "linear" scores a text straight from its n-grams' table rows (one weight per
    # label, TF-IDF pooled: training/families/bag.py); "embedding" pools embedding_dim-wide
    # rows the same way and classifies them with a linear layer (fastText-style, with dropout).
    bag_head: str = "linear"
    # bag family: which rows of the hashed table ship (training/families/bag.py). Rows training
    # never touched never ship; "trained" keeps all the others, a fraction keeps that share of
    # them (the ones that move the logits most), "auto" the smallest share whose validation
    # accuracy stays within prune_tolerance of the unpruned model's. The default ships every trained row:
    # with the linear head that is 0.68 MB on sms-spam, and "auto" there chose 2 % of the rows
    # (28 KB) for a 0.11-point loss on the eval split that was 0.45 on test.csv
    # (benchmarks/RESULTS.md, "Model quality").
    prune_rows: str = "trained"
    prune_tolerance: float = 0.0025  # a quarter point: on a ~900-row eval split, 1 row is 0.11 pt
    # transformer family
    base_model: str = ""  # a Hugging Face model directory; empty: the base_model channel, else all-MiniLM-L6-v2
    max_length: int = 64
    gradient_accumulation_steps: int = 1
    # transformer compression (training/families/transformer.py): keep the bottom N encoder
    # layers (0: all of the base model's), and the tokens training texts use at least this many
    # times plus the special ones (0: the base model's whole vocabulary).
    encoder_layers: int = 0
    vocabulary_min_count: int = 0
    # Distillation (training/distillation.py): a registry version whose model teaches this one
    # (the launcher hands its artifact to the job as the "teacher" channel; empty: no teacher).
    # The student learns the teacher's scores softened by distill_temperature, weighted
    # distill_weight against the labels, on the training rows, distill_augment word-dropped
    # copies of each, and the texts of an optional "unlabeled" channel.
    teacher_version: str = ""
    distill_temperature: float = 2.0
    distill_weight: float = 0.5
    distill_augment: int = 0

    _resolved_fields: ClassVar[frozenset[str]] = frozenset()
    """Set per instance in __post_init__: the fields it resolved (see with_changes)."""

    def __post_init__(self) -> None:
        if self.model_family not in MODEL_FAMILIES:
            raise ConfigError(f"model_family should be one of {list(MODEL_FAMILIES)} (got: {self.model_family!r})")
        if self.calibration not in CALIBRATIONS:
            raise ConfigError(f"calibration should be one of {list(CALIBRATIONS)} (got: {self.calibration!r})")
        if self.bag_head not in BAG_HEADS:
            raise ConfigError(f"bag_head should be one of {list(BAG_HEADS)} (got: {self.bag_head!r})")
        resolved = {name for name in _RESOLVED_FIELDS if getattr(self, name) is None}
        object.__setattr__(self, "_resolved_fields", frozenset(resolved))
        if self.teacher_version and self.class_weighting is None:
            object.__setattr__(self, "class_weighting", "none")  # the teacher's scores carry the balance
        head = self.bag_head if self.model_family == "bag" else None
        for name, default in FAMILY_DEFAULTS[(self.model_family, head)].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)  # frozen: resolved once, at construction
        if self.class_weighting not in CLASS_WEIGHTINGS:
            raise ConfigError(
                f"class_weighting should be one of {list(CLASS_WEIGHTINGS)} (got: {self.class_weighting!r})"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule should be one of {list(LR_SCHEDULES)} (got: {self.lr_schedule!r})")
        for name, (low, high) in BOUNDS.items():
            value = getattr(self, name)
            # Written so that NaN fails too: every comparison with NaN is false.
            if value is not None and not (low <= value <= high and value == value):
                raise ConfigError(f"{name} should be between {_show(low)} and {_show(high)} (got: {value!r})")
        for name in ("dropout", "eval_fraction"):  # open at the top: 1.0 drops or holds out everything
            if getattr(self, name) >= 1.0:
                raise ConfigError(f"{name} should be below 1 (got: {getattr(self, name)!r})")
        if self.eval_fraction <= 0.0:
            raise ConfigError(f"eval_fraction should be above 0 (got: {self.eval_fraction!r})")
        if self.buckets * self.embedding_dim > MAX_TABLE_WEIGHTS:
            raise ConfigError(
                f"buckets × embedding_dim should be at most {MAX_TABLE_WEIGHTS:,} (a 1 GiB table) "
                f"(got: {self.buckets:,} × {self.embedding_dim:,})"
            )
        if not _VERSION_NAME.fullmatch(self.teacher_version):
            raise ConfigError(
                f"teacher_version should be a registry version (letters, digits, '.', '_', '-'; at most "
                f"100) or empty (got: {self.teacher_version!r})"
            )
        if self.teacher_version and self.class_weighting != "none":
            raise ConfigError(
                "class_weighting should be none with a teacher_version: the student learns the teacher's "
                f"scores, which carry their own balance (got: {self.class_weighting!r})"
            )
        self.prune_share()  # validates prune_rows
        self.preprocessing()  # validates buckets, n-gram settings

    def with_changes(self, **changes: Any) -> Hyperparameters:
        """A copy with ``changes``, in which every field this one left to its family's defaults
        is resolved again for the copy's family, head and teacher. ``dataclasses.replace`` keeps
        the resolved values: a transformer made that way from the default bag would train at
        the bag's step of 30, and a student (``teacher_version``) would keep balanced weights,
        which a student refuses."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise ConfigError(
                f"expected hyperparameters among {sorted(f.name for f in fields(self))} (got unknown: {unknown})"
            )
        kept = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self._resolved_fields}
        return Hyperparameters(**(kept | changes))

    def prune_share(self) -> float | None:
        """The share of trained table rows to keep: None for "auto", 1.0 for "trained"."""
        text = self.prune_rows.strip().lower()
        if text == "auto":
            return None
        if text == "trained":
            return 1.0
        try:
            share = float(text)
        except ValueError:
            share = float("nan")
        if not 0.0 < share <= 1.0:  # NaN fails too
            raise ConfigError(
                f'prune_rows should be "auto", "trained" or a share of the trained rows in (0, 1] '
                f"(got: {self.prune_rows!r})"
            )
        return share

    def preprocessing(self) -> HashedNgramSpec:
        return HashedNgramSpec(
            buckets=self.buckets,
            word_ngrams=self.word_ngrams,
            char_ngrams=_parse_range(self.char_ngrams),
            max_features=self.max_features,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_strings(self) -> dict[str, str]:
        """The form SageMaker's CreateTrainingJob wants: every value a string."""
        return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in asdict(self).items()}

    @classmethod
    def from_strings(cls, values: Mapping[str, str]) -> Hyperparameters:
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"expected hyperparameters among {sorted(known)} (got unknown: {unknown})")
        parsed: dict[str, Any] = {}
        for name, raw in values.items():
            kind = str(known[name].type).replace(" | None", "")
            try:
                # "none" is None, unless the field takes "none" as one of its values.
                empty = raw.strip().lower() in ("none", "null") and raw.strip() not in _VALUE_CHOICES.get(name, ())
                if empty and "None" in str(known[name].type):
                    parsed[name] = None
                elif kind == "bool":
                    if raw.lower() not in ("true", "false", "1", "0"):
                        raise ValueError(raw)
                    parsed[name] = raw.lower() in ("true", "1")
                elif kind == "int":
                    parsed[name] = int(raw)
                elif kind == "float":
                    parsed[name] = float(raw)
                else:
                    parsed[name] = raw
            except ValueError as exc:
                raise ConfigError(f"hyperparameter {name} should be of type {kind} (got: {raw!r})") from exc
        return cls(**parsed)


def _show(bound: float) -> str:
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def _parse_range(text: str) -> tuple[int, int] | None:
    """'3-4' -> (3, 4); 'none' or '' disables character n-grams."""
    if text.strip().lower() in ("", "none", "off"):
        return None
    try:
        low, _, high = text.partition("-")
        return int(low), int(high or low)
    except ValueError as exc:
        raise ConfigError(f"char_ngrams should look like '3-4' or 'none' (got: {text!r})") from exc
