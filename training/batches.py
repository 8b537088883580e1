"""Tokenized data held once as tensors, and length-bucketed batches cut from it.

Every text is tokenized once, before the first epoch, into one flat tensor of token ids plus
each row's offset and length (a ragged layout: no padding is stored). The whole table moves
to the training device once; a step then only ships the row indices of its batch and builds
the padded ``[rows, longest]`` block on the device with one gather, so there is no per-step
tokenization and no per-step host-to-device copy of data.

Batches are bucketed by length: each epoch's shuffled rows are cut into pools, each pool is
sorted by length and cut into batches, and the batches are shuffled. Rows of similar length
share a batch, so little of each block is padding, while every epoch still sees a new mix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

POOL_BATCHES = 50
"""Batches per sorting pool: large enough for tight lengths, small enough to keep batches varied."""


@dataclass(frozen=True)
class RaggedTokens:
    values: torch.Tensor  # int64 [total tokens], on the training device
    offsets: torch.Tensor  # int64 [rows], on the training device
    lengths: torch.Tensor  # int64 [rows], on the training device
    host_lengths: torch.Tensor  # the same lengths on the CPU: batch widths without a device sync
    pad_id: int

    @classmethod
    def from_lists(cls, rows: Sequence[Sequence[int]], pad_id: int) -> RaggedTokens:
        lengths = torch.as_tensor([len(r) for r in rows], dtype=torch.long)
        values = torch.as_tensor([t for r in rows for t in r], dtype=torch.long)
        return cls._build(values, lengths, pad_id)

    @classmethod
    def from_ragged(cls, values: np.ndarray, lengths: np.ndarray, pad_id: int) -> RaggedTokens:
        """From every row's ids one after the other and each row's length (the featurizer's)."""
        return cls._build(torch.from_numpy(np.asarray(values, dtype=np.int64)), torch.from_numpy(lengths), pad_id)

    @classmethod
    def from_padded(cls, ids: np.ndarray, mask: np.ndarray, pad_id: int) -> RaggedTokens:
        """From a right-padded matrix and its attention mask (a tokenizer's batch output)."""
        keep = torch.from_numpy(np.asarray(mask)).bool()
        return cls._build(torch.from_numpy(np.asarray(ids, dtype=np.int64))[keep], keep.sum(dim=1), pad_id)

    @classmethod
    def _build(cls, values: torch.Tensor, lengths: torch.Tensor, pad_id: int) -> RaggedTokens:
        offsets = torch.cumsum(lengths, 0) - lengths
        # One pad token at the end, so a gather never indexes past the table (empty rows included).
        values = torch.cat([values, torch.tensor([pad_id], dtype=torch.long)])
        return cls(values, offsets, lengths, lengths.clone(), pad_id)

    def __len__(self) -> int:
        return len(self.host_lengths)

    def to(self, device: torch.device) -> RaggedTokens:
        return RaggedTokens(
            self.values.to(device), self.offsets.to(device), self.lengths.to(device), self.host_lengths, self.pad_id
        )

    def width(self, rows: torch.Tensor) -> int:
        """The padded width of a batch of ``rows`` (CPU indices): its longest row, at least 1."""
        return max(1, int(self.host_lengths[rows].max())) if len(rows) else 1

    def gather(self, rows: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded ids ``[len(rows), width]`` and the boolean mask of real tokens, on ``device``."""
        width = self.width(rows)
        rows = rows.to(device, non_blocking=True)
        position = torch.arange(width, device=device)
        lengths = self.lengths[rows].unsqueeze(1)
        mask = position.unsqueeze(0) < lengths
        index = torch.where(mask, self.offsets[rows].unsqueeze(1) + position, len(self.values) - 1)
        return self.values[index], mask


def length_bucketed_batches(
    lengths: torch.Tensor, batch_size: int, generator: torch.Generator, *, bucket: bool = True
) -> list[torch.Tensor]:
    """One epoch's global batches (CPU row-index tensors), all exactly ``batch_size`` rows.

    The rows left over after the last full batch sit this epoch out; a different remainder
    is left out each epoch since the shuffle changes. With ``bucket=False`` the batches are
    plain shuffled slices (what a loop without bucketing would do), for comparison.
    """
    order = torch.randperm(len(lengths), generator=generator)
    usable = len(order) // batch_size * batch_size
    order = order[:usable]
    if not bucket:
        return list(order.split(batch_size))
    batches: list[torch.Tensor] = []
    for pool in order.split(batch_size * POOL_BATCHES):
        by_length = pool[torch.argsort(lengths[pool], stable=True)]
        batches.extend(by_length.split(batch_size))
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled]


def padding_share(lengths: torch.Tensor, batches: Sequence[torch.Tensor]) -> float:
    """Share of the padded ``[rows, longest]`` blocks that is padding, over all ``batches``."""
    padded = sum(len(b) * max(1, int(lengths[b].max())) for b in batches)
    real = sum(int(lengths[b].sum()) for b in batches)
    return 1.0 - real / padded if padded else 0.0
