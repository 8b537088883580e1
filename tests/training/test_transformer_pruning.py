"""Transformer compression: encoder layers and vocabulary cut before fine-tuning, and what ships.
``pytest -k prun`` selects these."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from tokenizers import Tokenizer

from skiff.errors import ConfigError
from skiff.model.predictor import Predictor
from tests.conftest import predict_in_a_fresh_process
from tests.training.test_transformer import train
from training.families.transformer import prune_vocabulary


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory, small_sms: tuple[Path, Path], tiny_base: Path) -> Path:
    return train(
        tmp_path_factory.mktemp("transformer-pruned"),
        *small_sms,
        tiny_base,
        encoder_layers="1",
        vocabulary_min_count="3",
    )


@pytest.fixture(scope="module")
def pruned_metrics(pruned: Path) -> dict:
    return json.loads((pruned / "metrics.json").read_text())


def test_pruned_transformer_records_both_cuts(pruned_metrics: dict, tiny_base: Path) -> None:
    compression = pruned_metrics["compression"]
    base_vocabulary = Tokenizer.from_file(str(tiny_base / "tokenizer.json")).get_vocab_size()
    assert compression["encoder_layers"] == {"base": 2, "kept": 1}
    assert compression["vocabulary"]["base"] == base_vocabulary
    assert 5 < compression["vocabulary"]["kept"] < base_vocabulary and compression["vocabulary"]["min_count"] == 3


def test_pruned_transformer_ships_a_tokenizer_of_the_kept_vocabulary(pruned: Path, pruned_metrics: dict) -> None:
    tokenizer = Tokenizer.from_file(str(pruned / "tokenizer.json"))
    assert tokenizer.get_vocab_size() == pruned_metrics["compression"]["vocabulary"]["kept"]
    encoded = tokenizer.encode("free now \u2603")
    assert encoded.tokens == ["free", "now", "[UNK]"]
    assert max(encoded.ids) < tokenizer.get_vocab_size()


def test_pruned_transformer_graph_has_the_kept_layers_and_embedding_rows(pruned: Path, pruned_metrics: dict) -> None:
    graph = onnx.load(str(pruned / "model.fp32.onnx")).graph
    names = {t.name for t in graph.initializer}
    assert any(".layer.0." in n for n in names) and not any(".layer.1." in n for n in names)
    (table,) = [t for t in graph.initializer if t.name.endswith("word_embeddings.weight")]
    assert table.dims[0] == pruned_metrics["compression"]["vocabulary"]["kept"]


def test_pruned_transformer_scores_a_text_the_same_alone_and_in_a_batch(
    pruned: Path, small_sms: tuple[Path, Path]
) -> None:
    from skiff.data.dataset import read_csv

    predictor = Predictor.from_directory(pruned)
    texts = list(read_csv(small_sms[1]).texts[:63])
    short = min(texts, key=len)
    alone = predictor.predict([short])[0].scores
    batched = predictor.predict([*texts, short])[-1].scores
    assert max(abs(alone[label] - batched[label]) for label in alone) <= 1e-6


def test_pruned_transformer_serves_without_torch(pruned: Path) -> None:
    assert predict_in_a_fresh_process(pruned, "Free entry! Win a prize now")[0]["label"] in ("ham", "spam")


def test_vocabulary_pruning_renumbers_specials_and_keeps_the_old_order(tiny_base: Path) -> None:
    tokenizer = json.loads((tiny_base / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    tokenizer["post_processor"] = {  # as MiniLM's: [CLS] text [SEP]
        "type": "TemplateProcessing",
        "single": [
            {"SpecialToken": {"id": t, "type_id": 0}} if t != "A" else {"Sequence": {"id": "A", "type_id": 0}}
            for t in ("[CLS]", "A", "[SEP]")
        ],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {t: {"id": t, "ids": [vocab[t]], "tokens": [t]} for t in ("[CLS]", "[SEP]")},
    }
    keep = {vocab["free"], vocab["now"]}
    pruned, old_ids = prune_vocabulary(tokenizer, keep)
    specials = {t["content"] for t in tokenizer["added_tokens"]}
    assert set(pruned["model"]["vocab"]) == specials | {"free", "now"}
    assert (
        old_ids == sorted(old_ids)
        and [vocab[t] for t in sorted(pruned["model"]["vocab"], key=pruned["model"]["vocab"].get)] == old_ids
    )
    rebuilt = Tokenizer.from_str(json.dumps(pruned))
    assert rebuilt.encode("free now").tokens == ["[CLS]", "free", "now", "[SEP]"]
    assert rebuilt.encode("free now").ids == [pruned["model"]["vocab"][t] for t in ("[CLS]", "free", "now", "[SEP]")]


def test_vocabulary_pruning_refuses_a_bpe_tokenizer_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"expected a WordPiece tokenizer to prune the vocabulary of \(got: 'BPE'\)"):
        prune_vocabulary({"model": {"type": "BPE", "vocab": {}, "merges": []}}, set())


def test_more_encoder_layers_than_the_base_has_are_refused(
    tmp_path: Path, small_sms: tuple[Path, Path], tiny_base: Path
) -> None:
    from tests.training.test_transformer import TINY
    from training.train import main

    args = ["--train", str(small_sms[0]), "--model-dir", str(tmp_path / "m"), "--base_model", str(tiny_base)]
    args += ["--failure-file", str(tmp_path / "failure")]
    args += [a for k, v in {**TINY, "encoder_layers": "3"}.items() for a in (f"--{k}", v)]
    assert main(args) == 2
    assert "encoder_layers should be at most the base model's 2 (got: 3)" in (tmp_path / "failure").read_text()
