"""Training hyperparameters: one typed definition for the job, the CLI and the job launcher.

SageMaker passes hyperparameters to the entry point as ``--name value`` strings; the
launcher writes them with :meth:`Hyperparameters.to_strings` and the training script reads
them back with :meth:`Hyperparameters.from_strings`, so the two can never drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from skiff.errors import ConfigError
from skiff.model.features import HashedNgramSpec

MODEL_FAMILIES = ("bag", "transformer")
FAMILY_DEFAULTS = {
    "bag": {"epochs": 10, "learning_rate": 0.02},
    # Fine-tuning a pretrained encoder wants few epochs and a small step.
    "transformer": {"epochs": 3, "learning_rate": 5e-5},
}


@dataclass(frozen=True)
class Hyperparameters:
    """None for ``epochs`` / ``learning_rate`` means the model family's default (FAMILY_DEFAULTS).

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
    char_ngrams: str = "3-4"
    max_features: int = 2048
    eval_fraction: float = 0.2
    seed: int = 13
    min_parity_agreement: float = 0.99
    mixed_precision: bool = True
    length_bucketing: bool = True  # batches of similar lengths: little padding (training/batches.py)
    # transformer family
    base_model: str = ""  # a Hugging Face model directory; empty: the base_model channel, else all-MiniLM-L6-v2
    max_length: int = 64
    gradient_accumulation_steps: int = 1

    def __post_init__(self) -> None:
        if self.model_family not in MODEL_FAMILIES:
            raise ConfigError(f"model_family should be one of {list(MODEL_FAMILIES)} (got: {self.model_family!r})")
        for name, default in FAMILY_DEFAULTS[self.model_family].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)  # frozen: resolved once, at construction
        if self.gradient_accumulation_steps < 1:
            raise ConfigError(f"gradient_accumulation_steps should be >= 1 (got: {self.gradient_accumulation_steps})")
        if not 2 <= self.max_length <= 4096:
            raise ConfigError(f"max_length should be between 2 and 4096 (got: {self.max_length})")
        for name in ("epochs", "batch_size", "embedding_dim"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} should be >= 1 (got: {getattr(self, name)})")
        if self.learning_rate is not None and self.learning_rate <= 0:
            raise ConfigError(f"learning_rate should be > 0 (got: {self.learning_rate})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout should be in [0, 1) (got: {self.dropout})")
        if not 0.0 <= self.min_parity_agreement <= 1.0:
            raise ConfigError(f"min_parity_agreement should be in [0, 1] (got: {self.min_parity_agreement})")
        if not 0.0 < self.eval_fraction < 1.0:
            raise ConfigError(f"eval_fraction should be between 0 and 1 (got: {self.eval_fraction})")
        self.preprocessing()  # validates buckets, n-gram settings

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
                if raw.strip().lower() in ("none", "null") and "None" in str(known[name].type):
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


def _parse_range(text: str) -> tuple[int, int] | None:
    """'3-4' -> (3, 4); 'none' or '' disables character n-grams."""
    if text.strip().lower() in ("", "none", "off"):
        return None
    try:
        low, _, high = text.partition("-")
        return int(low), int(high or low)
    except ValueError as exc:
        raise ConfigError(f"char_ngrams should look like '3-4' or 'none' (got: {text!r})") from exc
