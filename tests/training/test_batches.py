"""Pre-tokenized ragged tensors and length-bucketed batches."""

from __future__ import annotations

import numpy as np
import torch

from training.batches import RaggedTokens, length_bucketed_batches, padding_share

ROWS = [[5, 6, 7], [], [8], [9, 10, 11, 12, 13], [14, 15]]


def test_gather_rebuilds_each_row_padded_to_the_longest_in_the_batch() -> None:
    tokens = RaggedTokens.from_lists(ROWS, pad_id=0)
    ids, mask = tokens.gather(torch.tensor([3, 1, 0]), torch.device("cpu"))
    assert ids.tolist() == [[9, 10, 11, 12, 13], [0, 0, 0, 0, 0], [5, 6, 7, 0, 0]]
    assert mask.sum(1).tolist() == [5, 0, 3]


def test_gather_pads_with_the_tokenizers_own_pad_id() -> None:
    tokens = RaggedTokens.from_lists(ROWS, pad_id=99)
    ids, _ = tokens.gather(torch.tensor([2, 4]), torch.device("cpu"))
    assert ids.tolist() == [[8, 99], [14, 15]]


def test_a_batch_of_empty_rows_is_one_column_wide() -> None:
    ids, mask = RaggedTokens.from_lists([[], []], pad_id=0).gather(torch.tensor([0, 1]), torch.device("cpu"))
    assert ids.shape == (2, 1) and not mask.any()


def test_from_padded_keeps_only_the_real_tokens() -> None:
    ids = np.array([[101, 7, 102, 0], [101, 102, 0, 0]])
    mask = (ids != 0).astype(np.int64)
    tokens = RaggedTokens.from_padded(ids, mask, pad_id=0)
    assert tokens.host_lengths.tolist() == [3, 2]
    assert tokens.gather(torch.tensor([0, 1]), torch.device("cpu"))[0].tolist() == [[101, 7, 102], [101, 102, 0]]


def test_every_batch_is_full_and_no_row_repeats() -> None:
    lengths = torch.randint(1, 60, (1000,), generator=torch.Generator().manual_seed(1))
    batches = length_bucketed_batches(lengths, 32, torch.Generator().manual_seed(2))
    rows = torch.cat(batches)
    assert {len(b) for b in batches} == {32} and len(batches) == 1000 // 32
    assert len(set(rows.tolist())) == len(rows)


def test_the_same_seed_gives_the_same_batches() -> None:
    lengths = torch.randint(1, 60, (500,), generator=torch.Generator().manual_seed(1))
    first = length_bucketed_batches(lengths, 16, torch.Generator().manual_seed(7))
    second = length_bucketed_batches(lengths, 16, torch.Generator().manual_seed(7))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_bucketing_pads_much_less_than_plain_shuffled_batches() -> None:
    lengths = torch.randint(1, 60, (2000,), generator=torch.Generator().manual_seed(1))
    plain = padding_share(lengths, length_bucketed_batches(lengths, 32, torch.Generator().manual_seed(3), bucket=False))
    bucketed = padding_share(lengths, length_bucketed_batches(lengths, 32, torch.Generator().manual_seed(3)))
    assert plain > 0.3 and bucketed < 0.05
