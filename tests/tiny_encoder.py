"""A tiny BERT encoder saved in Hugging Face format, built offline (no hub): for the tests and
for scripts that need the transformer family to run in seconds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def build_tiny_encoder(texts: Sequence[str], directory: Path, seed: int = 0) -> Path:
    """A WordPiece tokenizer trained on ``texts`` and a 2-layer, 32-wide BERT, saved in ``directory``."""
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertConfig, BertModel

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = BertWordPieceTokenizer(lowercase=True)
    tokenizer.train_from_iterator(texts, vocab_size=1500, min_frequency=2)
    tokenizer.save(str(directory / "tokenizer.json"))
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(directory)
    return directory
