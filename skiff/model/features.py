"""Featurization shared by training and serving.

Training and serving must never disagree about how text becomes model input, so both build
their featurizer from the same serialized spec (``preprocessing.json`` in every artifact).
A spec names its ``family``; :func:`featurizer_from_spec` picks the implementation. Today
there is one family, hashed word and character n-grams for the bag family; a
tokenizer-based family for pretrained encoders plugs in beside it.

Hashing uses BLAKE2b, never Python's ``hash()``, which is salted per process: the same text
must map to the same buckets in the training job, in every Lambda container and on every
laptop.

A pruned bag model keeps only some rows of its hashed table (those training ever touched,
ranked by how much they move the logits). Its spec (version 2) names a file of the kept
bucket ids; :class:`BucketRemap` maps each bucket id to its compact row, and every other
bucket to one zero row, so an unseen feature still counts in the mean but adds nothing.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from skiff.errors import ConfigError

PADDING_ID = 0
"""Token id 0 is padding; hashed features occupy ids 1..buckets."""

_TOKEN = re.compile(r"[^\W\d_]+|\d+|[^\w\s]")
"""Runs of letters, runs of digits, and single symbols ('£', '!', '&' matter for spam)."""


PLAIN = "NFKC+casefold"
"""Unicode NFKC (full-width and compatibility forms fold together), then casefold: what every
spec before version 3 used."""
FOLDED = "NFKC+casefold+ascii-quotes+strip-accents"
"""PLAIN after typographic quotes become ASCII ones and Latin accents are dropped ("café" and
"cafe", "don’t" and "don't" are one word): phones type curly quotes, people drop accents, and
on sms-spam both together cost the bag model a point it did not lose on plain text."""
NORMALIZATIONS = (PLAIN, FOLDED)

_ASCII_QUOTES = str.maketrans(
    {"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u02bc": "'"}
    | {"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"'}
)
_LATIN_ACCENTS = re.compile("[\u0300-\u036f]")
"""The Combining Diacritical Marks block only: marks of other scripts (a Devanagari virama, a
Hebrew point) carry meaning and stay."""


def normalize(text: str, normalization: str = FOLDED) -> str:
    """Fold ``text`` as ``normalization`` (one of NORMALIZATIONS) says."""
    if normalization == FOLDED and not text.isascii():
        text = _LATIN_ACCENTS.sub("", unicodedata.normalize("NFKD", text.translate(_ASCII_QUOTES)))
    return unicodedata.normalize("NFKC", text).casefold()


def tokenize(text: str, normalization: str = FOLDED) -> list[str]:
    """Split normalized text into letter runs, digit runs and single symbols."""
    return _TOKEN.findall(normalize(text, normalization))


@lru_cache(maxsize=1 << 20)
def _bucket(feature: str, buckets: int) -> int:
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % buckets + 1


@lru_cache(maxsize=1 << 18)
def _char_ids(token: str, low: int, high: int, buckets: int) -> tuple[int, ...]:
    """The bucket ids of one word's character n-grams (``<word>`` padded), shortest first."""
    if len(token) < 2:
        return ()  # single symbols and letters are already word features
    padded = f"<{token}>"
    return tuple(
        _bucket("c:" + padded[i : i + n], buckets) for n in range(low, high + 1) for i in range(len(padded) - n + 1)
    )


class Featurizer(Protocol):
    """Turns texts into the named input arrays of the exported ONNX model."""

    @property
    def input_names(self) -> tuple[str, ...]: ...

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]: ...

    def to_spec(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class HashedNgramSpec:
    """Settings of the hashed n-gram featurizer; serialized verbatim into the artifact."""

    FAMILY: ClassVar[str] = "hashed-ngrams"
    VERSION: ClassVar[int] = 1
    PRUNED_VERSION: ClassVar[int] = 2
    """Written only for pruned tables, so a server that predates pruning refuses them (a v1
    reader would feed raw bucket ids to a compact table)."""
    NORMALIZATION_VERSION: ClassVar[int] = 3
    """Written when ``normalization`` is not PLAIN (pruned or not), so a server that predates the
    field refuses the spec instead of folding text differently from training."""

    buckets: int = 1 << 18
    word_ngrams: int = 2
    char_ngrams: tuple[int, int] | None = (3, 4)
    max_features: int = 2048
    kept_buckets_file: str | None = None
    """Pruned tables: the artifact's file of kept bucket ids (see :class:`BucketRemap`)."""
    normalization: str = FOLDED

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(f"normalization should be one of {list(NORMALIZATIONS)} (got: {self.normalization!r})")
        if self.buckets < 2:
            raise ConfigError(f"buckets should be >= 2 (got: {self.buckets})")
        if self.word_ngrams < 1:
            raise ConfigError(f"word_ngrams should be >= 1 (got: {self.word_ngrams})")
        if self.char_ngrams is not None:
            low, high = self.char_ngrams
            if not 1 <= low <= high:
                raise ConfigError(f"char_ngrams should be (min, max) with 1 <= min <= max (got: {self.char_ngrams})")
        if self.max_features < 1:
            raise ConfigError(f"max_features should be >= 1 (got: {self.max_features})")

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["char_ngrams"] = list(self.char_ngrams) if self.char_ngrams else None
        if self.kept_buckets_file is None:
            del body["kept_buckets_file"]  # an unpruned spec stays exactly what version 1 wrote
        if self.normalization != PLAIN:
            version = self.NORMALIZATION_VERSION
        else:
            version = self.PRUNED_VERSION if self.kept_buckets_file else self.VERSION
        return {
            "family": self.FAMILY,
            "version": version,
            "hash": "blake2b-64",
            "padding_id": PADDING_ID,
            **body,
        }

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> HashedNgramSpec:
        version = spec.get("version")
        versions = (cls.VERSION, cls.PRUNED_VERSION, cls.NORMALIZATION_VERSION)
        if version not in versions:
            raise ConfigError(f"expected {cls.FAMILY} preprocessing version one of {list(versions)} (got: {version!r})")
        kept = spec.get("kept_buckets_file")
        if version != cls.NORMALIZATION_VERSION and (version == cls.PRUNED_VERSION) != bool(kept):
            raise ConfigError(
                f"expected kept_buckets_file exactly in a version {cls.PRUNED_VERSION} {cls.FAMILY} spec "
                f"(got: version {version}, kept_buckets_file {kept!r})"
            )
        char_ngrams = spec.get("char_ngrams")
        return cls(
            buckets=int(spec["buckets"]),
            word_ngrams=int(spec["word_ngrams"]),
            char_ngrams=(int(char_ngrams[0]), int(char_ngrams[1])) if char_ngrams else None,
            max_features=int(spec["max_features"]),
            kept_buckets_file=str(kept) if kept else None,
            # Before version 3 the field was written but always PLAIN, and readers ignored it.
            normalization=str(spec.get("normalization")) if version == cls.NORMALIZATION_VERSION else PLAIN,
        )


@dataclass(frozen=True)
class BucketRemap:
    """Bucket ids (1..buckets) -> rows of a pruned table: padding stays 0, the i-th kept bucket
    (in ascending order) becomes row i + 1, every other bucket the zero row ``len(kept) + 1``.

    One array lookup for a whole padded batch: a dense table of ``buckets + 1`` row numbers
    (2 MiB for 2^18 buckets, built on load) costs a microsecond where a search costs tens. The
    kept ids travel in the artifact as a ``.npy`` file of uint32, 4 bytes per kept row.
    """

    kept: np.ndarray = field(compare=False)
    buckets: int
    lookup: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lookup = np.full(self.buckets + 1, self.unseen_row, dtype=np.int64)
        lookup[PADDING_ID] = PADDING_ID
        lookup[self.kept] = np.arange(1, len(self.kept) + 1, dtype=np.int64)
        object.__setattr__(self, "lookup", lookup)

    @property
    def rows(self) -> int:
        """Rows of the pruned table: padding, the kept rows, the zero row for every other bucket."""
        return len(self.kept) + 2

    @property
    def unseen_row(self) -> int:
        return len(self.kept) + 1

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        return self.lookup[ids]

    def save(self, path: Path) -> None:
        with open(path, "wb") as out:
            np.save(out, self.kept.astype(np.uint32), allow_pickle=False)

    @classmethod
    def load(cls, path: Path, buckets: int) -> BucketRemap:
        if not path.is_file():
            raise ConfigError(f"expected the kept buckets file {path.name} in {path.parent} (got: missing)")
        kept = np.load(path, allow_pickle=False)
        if kept.ndim != 1 or kept.dtype.kind not in "iu":
            raise ConfigError(
                f"expected {path.name} to hold one row of integer bucket ids (got: {kept.dtype} {kept.shape})"
            )
        kept = kept.astype(np.int64)
        ascending = bool((np.diff(kept) > 0).all())
        if len(kept) and (kept[0] < 1 or kept[-1] > buckets or not ascending):
            raise ConfigError(
                f"expected {path.name} to hold ascending, distinct bucket ids in 1..{buckets} "
                f"(got: {len(kept)} ids from {kept.min()} to {kept.max()}, ascending: {ascending})"
            )
        return cls(kept, buckets)


@dataclass(frozen=True)
class HashedNgramFeaturizer:
    """Word n-grams (and optionally character n-grams of each word) hashed into buckets."""

    spec: HashedNgramSpec = field(default_factory=HashedNgramSpec)
    remap: BucketRemap | None = None
    """A pruned table's: applied to the padded ids after hashing (training hashes without it)."""

    input_names: tuple[str, ...] = ("token_ids",)

    def features(self, text: str) -> list[str]:
        """The feature strings of one text, in a fixed order, before hashing."""
        tokens = tokenize(text, self.spec.normalization)
        out: list[str] = []
        for n in range(1, self.spec.word_ngrams + 1):
            # The prefix keeps n-gram orders apart: the unigram "a b" cannot collide with a bigram.
            out.extend(f"w{n}:" + " ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        if self.spec.char_ngrams is not None:
            low, high = self.spec.char_ngrams
            for token in tokens:
                if len(token) < 2:
                    continue  # single symbols and letters are already word features
                padded = f"<{token}>"
                for n in range(low, high + 1):
                    out.extend("c:" + padded[i : i + n] for i in range(len(padded) - n + 1))
        return out[: self.spec.max_features]

    def ids(self, text: str) -> list[int]:
        """Bucket ids (1..buckets) of one text; empty when the text has no tokens.

        The ids of :meth:`features`, in the same order, without building every feature string:
        a word's character n-grams are hashed once per process (:func:`_char_ids`), since the
        same words recur from text to text; what is left per text is tokenizing and its word
        n-grams."""
        buckets = self.spec.buckets
        tokens = tokenize(text, self.spec.normalization)
        out = [_bucket("w1:" + token, buckets) for token in tokens]
        for n in range(2, self.spec.word_ngrams + 1):
            out.extend(_bucket(f"w{n}:" + " ".join(tokens[i : i + n]), buckets) for i in range(len(tokens) - n + 1))
        if self.spec.char_ngrams is not None:
            low, high = self.spec.char_ngrams
            for token in tokens:
                if len(out) >= self.spec.max_features:
                    break
                out.extend(_char_ids(token, low, high, buckets))
        return out[: self.spec.max_features]

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        ids = pad_ids([self.ids(t) for t in texts])
        return {"token_ids": self.remap(ids) if self.remap is not None else ids}

    def pruned(self, remap: BucketRemap, kept_buckets_file: str) -> HashedNgramFeaturizer:
        """The same featurizer for a table pruned to ``remap``'s rows."""
        return HashedNgramFeaturizer(replace(self.spec, kept_buckets_file=kept_buckets_file), remap)

    def to_spec(self) -> dict[str, Any]:
        return self.spec.to_dict()


def pad_ids(rows: Sequence[Sequence[int]]) -> np.ndarray:
    """Right-pad id lists with PADDING_ID into one int64 matrix (at least one column)."""
    width = max((len(r) for r in rows), default=0) or 1
    out = np.full((len(rows), width), PADDING_ID, dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


@dataclass(frozen=True)
class TokenizerSpec:
    """A pretrained encoder's tokenizer (``tokenizer.json``, run by the Rust ``tokenizers``)."""

    FAMILY: ClassVar[str] = "hf-tokenizer"
    VERSION: ClassVar[int] = 1

    max_length: int = 64
    tokenizer_file: str = "tokenizer.json"

    def __post_init__(self) -> None:
        if not 2 <= self.max_length <= 4096:
            raise ConfigError(f"max_length should be between 2 and 4096 (got: {self.max_length})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "family": self.FAMILY,
            "version": self.VERSION,
            "max_length": self.max_length,
            "tokenizer_file": self.tokenizer_file,
            "padding": "longest",
            "truncation": "longest_first",
        }

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> TokenizerSpec:
        if spec.get("version") != cls.VERSION:
            raise ConfigError(
                f"expected {cls.FAMILY} preprocessing version {cls.VERSION} (got: {spec.get('version')!r})"
            )
        return cls(max_length=int(spec["max_length"]), tokenizer_file=str(spec["tokenizer_file"]))


class TokenizerFeaturizer:
    """input_ids + attention_mask, truncated to ``max_length`` and padded to the longest text.

    Training and serving both encode through this class, so token ids cannot drift; a test
    checks them against the transformers tokenizer built from the same file.
    """

    input_names: tuple[str, ...] = ("input_ids", "attention_mask")

    def __init__(self, spec: TokenizerSpec, directory: Path) -> None:
        from tokenizers import Tokenizer  # the Rust tokenizer; only this family needs it

        path = Path(directory) / spec.tokenizer_file
        if not path.is_file():
            raise ConfigError(f"expected {spec.tokenizer_file} in {directory} (got: missing)")
        self.spec = spec
        self.tokenizer = Tokenizer.from_file(str(path))
        self.tokenizer.enable_truncation(max_length=spec.max_length)
        pad_id = self.tokenizer.token_to_id("[PAD]")
        self.pad_id = pad_id if pad_id is not None else 0
        self.tokenizer.enable_padding(pad_id=self.pad_id, pad_token="[PAD]")

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        encodings = self.tokenizer.encode_batch(list(texts))
        return {
            "input_ids": np.asarray([e.ids for e in encodings], dtype=np.int64).reshape(len(texts), -1),
            "attention_mask": np.asarray([e.attention_mask for e in encodings], dtype=np.int64).reshape(len(texts), -1),
        }

    def to_spec(self) -> dict[str, Any]:
        return self.spec.to_dict()


FAMILIES = (HashedNgramSpec.FAMILY, TokenizerSpec.FAMILY)


def featurizer_from_spec(spec: Mapping[str, Any], directory: Path | None = None) -> Featurizer:
    """Rebuild exactly the featurizer a model was trained with from its serialized spec.

    ``directory`` is the artifact's: families that carry files (a tokenizer) read them there.
    """
    family = spec.get("family")
    if family == HashedNgramSpec.FAMILY:
        hashed = HashedNgramSpec.from_dict(spec)
        if hashed.kept_buckets_file is None:
            return HashedNgramFeaturizer(hashed)
        if directory is None:
            raise ConfigError(f"expected the artifact directory for a pruned {family} featurizer (got: none)")
        return HashedNgramFeaturizer(
            hashed, BucketRemap.load(Path(directory) / hashed.kept_buckets_file, hashed.buckets)
        )
    if family == TokenizerSpec.FAMILY:
        if directory is None:
            raise ConfigError(f"expected the artifact directory for a {family} featurizer (got: none)")
        return TokenizerFeaturizer(TokenizerSpec.from_dict(spec), directory)
    raise ConfigError(f"expected preprocessing family one of {list(FAMILIES)} (got: {family!r})")
