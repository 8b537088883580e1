"""Featurization shared by training and serving.

Training and serving must never disagree about how text becomes model input, so both build
their featurizer from the same serialized spec (``preprocessing.json`` in every artifact).
A spec names its ``family``; :func:`featurizer_from_spec` picks the implementation. Today
there is one family, hashed word and character n-grams for the bag family; a
tokenizer-based family for pretrained encoders plugs in beside it.

Hashing never uses Python's ``hash()``, which is salted per process: the same text must map to
the same buckets in the training job, in every Lambda container and on every laptop. Specs
from version 4 on hash with ``poly64`` (:func:`poly64_bucket`), a polynomial hash over code
points with a 64-bit finalizer, which numpy computes for every n-gram of a whole batch at once
(:func:`poly64_ids`): training and serving both call it, and featurization costs about
what the model does. Older specs hashed each n-gram with BLAKE2b in a Python loop; they keep
that path (:func:`_bucket`), so an artifact maps text exactly as it was trained.

A pruned bag model keeps only some rows of its hashed table (those training ever touched,
ranked by how much they move the logits). Its spec (version 2) names a file of the kept
bucket ids; :class:`BucketRemap` maps each bucket id to its compact row, and every other
bucket to one zero row, so an unseen feature still counts in the mean but adds nothing.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
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

BLAKE2B = "blake2b-64"
"""BLAKE2b per n-gram string (specs before version 4)."""
POLY64 = "poly64"
"""A polynomial hash of code points, finalized with splitmix64 (specs from version 4 on)."""
HASHES = (BLAKE2B, POLY64)

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
    """A BLAKE2B spec's bucket of one feature string. A lone surrogate (JSON can carry one) gets
    its own bytes rather than an error; every other text encodes exactly as plain UTF-8."""
    digest = hashlib.blake2b(feature.encode("utf-8", "surrogatepass"), digest_size=8).digest()
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


# poly64: a string's hash is the polynomial sum(c_k * CHAR_BASE^(n-1-k)) over its code points
# + 1 (so a leading NUL still counts), mod 2^64; a word n-gram's is the same polynomial over its
# words' hashes with WORD_BASE. Both bases are odd, hence invertible mod 2^64, which lets numpy
# take any substring's hash from one prefix sum (see _Prefix). The kind and length go into a
# salt, and splitmix64's finalizer spreads the result over the buckets.
_MASK = (1 << 64) - 1
_CHAR_BASE = 0x100000001B3  # the FNV-1 64-bit prime
_WORD_BASE = 0x9E3779B97F4A7C15  # 2^64 / golden ratio, odd
_WORD_SALT, _CHAR_SALT = 1 << 32, 2 << 32
_INVERSE = {base: pow(base, -1, 1 << 64) for base in (_CHAR_BASE, _WORD_BASE)}


def _splitmix64(z: Any) -> Any:
    """splitmix64's finalizer, on a Python int or a uint64 array."""
    if isinstance(z, np.ndarray):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def _polynomial(values: Sequence[int], base: int) -> int:
    h = 0
    for value in values:
        h = (h * base + value) & _MASK
    return h


def poly64_bucket(feature: str, buckets: int) -> int:
    """A POLY64 spec's bucket of one feature string (``w<n>:`` words or ``c:`` characters).

    The readable definition, one feature at a time; :func:`poly64_ids` computes the same
    numbers for a whole batch, and a test holds the two equal over the whole test set."""
    kind, body = feature.split(":", 1)
    if kind == "c":
        h, salt = _polynomial([ord(c) + 1 for c in body], _CHAR_BASE), _CHAR_SALT | len(body)
    else:
        words = body.split(" ")
        h = _polynomial([_polynomial([ord(c) + 1 for c in w], _CHAR_BASE) for w in words], _WORD_BASE)
        salt = _WORD_SALT | len(words)
    return _splitmix64(h ^ salt) % buckets + 1


class _Prefix:
    """Hashes of any run ``values[i:j]`` of a uint64 sequence as one numpy expression:
    with G[j] = sum_{k<j} values[k] * base^-k, the run's polynomial is base^(j-1) * (G[j] - G[i])
    (everything mod 2^64, which numpy's uint64 arithmetic wraps to)."""

    def __init__(self, values: np.ndarray, base: int, overhang: int = 0) -> None:
        """``overhang``: runs may end up to that far past the values (the sums go on flat;
        such runs' hashes are meaningless, for callers that mask them out)."""
        count = len(values) + 1
        self.powers = _powers(base, count + overhang)
        inverse = _powers(_INVERSE[base], count)
        self.sums = np.empty(count + overhang, dtype=np.uint64)
        self.sums[0] = 0
        np.cumsum(values * inverse[: count - 1], out=self.sums[1:count])
        self.sums[count:] = self.sums[count - 1]

    def runs(self, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
        return self.powers[stops - 1] * (self.sums[stops] - self.sums[starts])


_POWERS: dict[int, np.ndarray] = {}


def _powers(base: int, count: int) -> np.ndarray:
    """base^0 .. base^(count-1) mod 2^64 (grown by doubling, kept per process)."""
    have = _POWERS.get(base)
    if have is None or len(have) < count:
        size = max(count, 2 * len(have) if have is not None else 4096)
        factors = np.full(size, base, dtype=np.uint64)
        factors[0] = 1
        have = _POWERS[base] = np.cumprod(factors, dtype=np.uint64)
    return have


def _ragged_arange(lengths: np.ndarray) -> np.ndarray:
    """0..lengths[0]-1, 0..lengths[1]-1, ... as one array."""
    ends = np.cumsum(lengths)
    return np.arange(int(ends[-1]) if len(ends) else 0, dtype=np.int64) - np.repeat(ends - lengths, lengths)


@dataclass(frozen=True)
class PlacedIds:
    """Bucket ids of a batch of texts with where each goes: ``ids[k]`` is feature number
    ``column[k]`` of text ``row[k]``; ``counts`` is each text's number of ids."""

    ids: np.ndarray
    row: np.ndarray
    column: np.ndarray
    counts: np.ndarray

    def ragged(self) -> tuple[np.ndarray, np.ndarray]:
        """Every text's ids one after the other, in order, and each text's count."""
        out = np.empty(len(self.ids), dtype=np.int64)
        out[(np.cumsum(self.counts) - self.counts)[self.row] + self.column] = self.ids
        return out, self.counts

    def padded(self) -> np.ndarray:
        """One row per text, right-padded with PADDING_ID (at least one column)."""
        width = int(self.counts.max()) if len(self.counts) and self.counts.max() > 0 else 1
        out = np.full((len(self.counts), width), PADDING_ID, dtype=np.int64)
        out[self.row, self.column] = self.ids
        return out


def poly64_ids(token_lists: Sequence[Sequence[str]], spec: HashedNgramSpec) -> PlacedIds:
    """The POLY64 bucket ids of many tokenized texts at once. Each text's ids are exactly
    ``poly64_bucket`` of its ``HashedNgramFeaturizer.features``, in that order, truncated at
    ``max_features``.

    No loop over texts and no sort: each kind of feature comes out as one block already ordered
    by text (word unigrams, then each longer word n-gram, then character n-grams), and each id's
    column is its text's earlier blocks plus its rank in its own block."""
    texts = len(token_lists)
    tokens = [token for row in token_lists for token in row]
    if not tokens:
        empty = np.zeros(0, dtype=np.int64)
        return PlacedIds(empty, empty, empty, np.zeros(texts, dtype=np.int64))
    lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    # Every token once, as "<token>": words hash the inside, character n-grams the whole.
    padded = np.frombuffer(("<" + "><".join(tokens) + ">").encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    overhang = spec.char_ngrams[1] if spec.char_ngrams else 0
    chars = _Prefix(np.add(padded, 1, dtype=np.uint64), _CHAR_BASE, overhang)
    starts = np.cumsum(lengths + 2) - (lengths + 2)  # of each "<token>"
    word_hashes = chars.runs(starts + 1, starts + 1 + lengths)

    # Each block: its features' hashes, and how to find the token each one starts at (needed
    # only to place the features of several texts, so only computed then).
    blocks: list[tuple[np.ndarray, Callable[[], np.ndarray]]] = []
    everyone = np.arange(len(tokens), dtype=np.int64)
    blocks.append((word_hashes ^ np.uint64(_WORD_SALT | 1), lambda: everyone))
    counts = np.fromiter(map(len, token_lists), dtype=np.int64, count=texts)
    text_of_token = np.repeat(np.arange(texts, dtype=np.int64), counts) if texts > 1 else None
    if spec.word_ngrams > 1:
        words = _Prefix(word_hashes, _WORD_BASE)
        text_stop = np.cumsum(counts)[text_of_token] if texts > 1 else len(tokens)  # one past each text's last token
        for n in range(2, spec.word_ngrams + 1):
            first = everyone[everyone + n <= text_stop]
            blocks.append((words.runs(first, first + n) ^ np.uint64(_WORD_SALT | n), lambda first=first: first))
    if spec.char_ngrams is not None:
        low, high = spec.char_ngrams
        eligible = everyone[lengths >= 2]  # single symbols and letters are already word features
        spans = lengths[eligible] + 2
        position = (np.repeat(starts[eligible], spans) + _ragged_arange(spans))[:, None]
        stops = position + np.arange(low, high + 1, dtype=np.int64)
        # One row per start, one column per n (row-major is features()' order); a run past its
        # token's end is hashed too, from the zero-padded tail of the prefix sums, then dropped.
        fits = stops <= np.repeat(starts[eligible] + spans, spans)[:, None]
        salts = np.uint64(_CHAR_SALT) | np.arange(low, high + 1, dtype=np.uint64)
        blocks.append(
            (
                (chars.runs(position, stops) ^ salts)[fits],
                lambda: np.repeat(np.repeat(eligible, spans), fits.sum(axis=1)),
            )
        )

    if text_of_token is None:  # one request's text: its blocks are already its order
        hashes = np.concatenate([hashes for hashes, _ in blocks])[: spec.max_features]
        ids = (_splitmix64(hashes) % np.uint64(spec.buckets)).astype(np.int64) + 1
        column = np.arange(len(ids), dtype=np.int64)
        return PlacedIds(ids, np.zeros(len(ids), dtype=np.int64), column, np.array([len(ids)], dtype=np.int64))
    total = np.zeros(texts, dtype=np.int64)
    columns, owners = [], []
    for _, token_of in blocks:
        owner = text_of_token[token_of()]
        per_text = np.bincount(owner, minlength=texts)
        columns.append(total[owner] + _ragged_arange(per_text))
        owners.append(owner)
        total += per_text
    column = np.concatenate(columns)
    keep = column < spec.max_features
    hashes = np.concatenate([hashes for hashes, _ in blocks])[keep]
    ids = (_splitmix64(hashes) % np.uint64(spec.buckets)).astype(np.int64) + 1
    return PlacedIds(ids, np.concatenate(owners)[keep], column[keep], np.minimum(total, spec.max_features))


TOKEN_CACHE_MAX_TEXTS = 1
"""Requests of at most this many texts featurize through the token cache (see ``encode``)."""


class _Poly64TokenCache:
    """What a POLY64 featurization reuses from token to token, so that serving a text whose
    words were all seen before costs dictionary lookups instead of numpy's fixed cost per call
    (which, for one short text, is ~3× the model's own compute).

    A text's ids are its word unigrams, then its word n-grams, then its tokens' character
    n-grams (:func:`poly64_ids`): the unigram and the character n-grams of a token depend on the
    token alone, and a word n-gram on its tokens' word hashes. So per token the cache keeps its
    unigram id, its character n-gram ids and its word hash (misses are computed for all of a
    batch's new tokens in one :func:`poly64_ids` call), and per word n-gram its id. Bounded:
    past ``capacity`` entries a table starts over, so memory stays flat under any traffic.
    """

    def __init__(self, spec: HashedNgramSpec, capacity: int = 1 << 15) -> None:
        # Each token as a text of its own: its unigram, then its character n-grams, untruncated.
        self.alone = replace(spec, word_ngrams=1, max_features=1 << 62, kept_buckets_file=None)
        self.spec, self.capacity = spec, capacity
        self.tokens: dict[str, tuple[int, int, np.ndarray]] = {}  # unigram id, word hash, char ids
        self.ngrams: dict[tuple[str, ...], int] = {}

    def ids(self, token_lists: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Every text's ids one after the other, and each text's count (as ``PlacedIds.ragged``)."""
        tokens = self._known([token for row in token_lists for token in row])
        ngrams = self.ngrams if len(self.ngrams) < 2 * self.capacity else {}
        self.ngrams = ngrams  # a reader holding the old table keeps it: no clear() under its feet
        buckets, top, cap = self.spec.buckets, self.spec.word_ngrams, self.spec.max_features
        parts: list[np.ndarray] = []  # per text: its word ids, then each token's character ids
        counts = []
        for row in token_lists:
            known = [tokens[token] for token in row]
            words = [unigram for unigram, _, _ in known]
            for n in range(2, top + 1):
                for key in zip(*(row[i:] for i in range(n)), strict=False):  # the n-grams that fit
                    found = ngrams.get(key)
                    if found is None:
                        h = _polynomial([tokens[token][1] for token in key], _WORD_BASE)
                        found = ngrams[key] = _splitmix64(h ^ (_WORD_SALT | n)) % buckets + 1
                    words.append(found)
            chars = [entry[2] for entry in known]
            text = [np.array(words, dtype=np.int64), *chars]
            count = len(words) + sum(map(len, chars))
            if count > cap:  # rare (2,048 by default): cut this text alone
                text, count = [np.concatenate(text)[:cap]], cap
            parts.extend(text)
            counts.append(count)
        values = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return values, np.array(counts, dtype=np.int64)

    def _known(self, tokens: Sequence[str]) -> dict[str, tuple[int, int, np.ndarray]]:
        """The cache entries of ``tokens``, computing the missing ones in one numpy call."""
        table, distinct = self.tokens, dict.fromkeys(tokens)
        missing = [token for token in distinct if token not in table]
        if not missing:
            return table
        if len(table) + len(missing) > self.capacity:
            table = self.tokens = {}  # a reader holding the old table keeps it
            missing = list(distinct)
        # The missing tokens as one text (numpy's cheapest call): its ids are their unigrams,
        # then each one's character n-grams, token after token.
        ids = poly64_ids([missing], self.alone).ids
        unigrams, chars = ids[: len(missing)].tolist(), ids[len(missing) :]
        ends = np.cumsum([self._char_count(len(token)) for token in missing]).tolist()
        for token, unigram, start, end in zip(missing, unigrams, [0, *ends[:-1]], ends, strict=True):
            table[token] = (unigram, _polynomial([ord(c) + 1 for c in token], _CHAR_BASE), chars[start:end])
        return table

    def _char_count(self, length: int) -> int:
        """How many character n-grams a token of ``length`` has (``<token>``, each n that fits)."""
        if self.spec.char_ngrams is None or length < 2:
            return 0
        low, high = self.spec.char_ngrams
        return sum(max(0, length + 2 - n + 1) for n in range(low, high + 1))


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
    HASH_VERSION: ClassVar[int] = 4
    """Written when ``hash`` is POLY64, so a server that only knows BLAKE2b refuses the spec."""

    buckets: int = 1 << 18
    word_ngrams: int = 2
    char_ngrams: tuple[int, int] | None = (3, 4)
    max_features: int = 2048
    kept_buckets_file: str | None = None
    """Pruned tables: the artifact's file of kept bucket ids (see :class:`BucketRemap`)."""
    normalization: str = FOLDED
    hash: str = POLY64

    def __post_init__(self) -> None:
        if self.hash not in HASHES:
            raise ConfigError(f"hash should be one of {list(HASHES)} (got: {self.hash!r})")
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
        if self.hash == POLY64:
            version = self.HASH_VERSION
        elif self.normalization != PLAIN:
            version = self.NORMALIZATION_VERSION
        else:
            version = self.PRUNED_VERSION if self.kept_buckets_file else self.VERSION
        return {"family": self.FAMILY, "version": version, "padding_id": PADDING_ID, **body}

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> HashedNgramSpec:
        version = spec.get("version")
        versions = (cls.VERSION, cls.PRUNED_VERSION, cls.NORMALIZATION_VERSION, cls.HASH_VERSION)
        if version not in versions:
            raise ConfigError(f"expected {cls.FAMILY} preprocessing version one of {list(versions)} (got: {version!r})")
        kept = spec.get("kept_buckets_file")
        if version in (cls.VERSION, cls.PRUNED_VERSION) and (version == cls.PRUNED_VERSION) != bool(kept):
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
            normalization=str(spec.get("normalization")) if version >= cls.NORMALIZATION_VERSION else PLAIN,
            # Before version 4 the field was written but always BLAKE2B.
            hash=str(spec.get("hash")) if version >= cls.HASH_VERSION else BLAKE2B,
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
    _tokens: _Poly64TokenCache | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.spec.hash == POLY64:
            object.__setattr__(self, "_tokens", _Poly64TokenCache(self.spec))

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
                if self.spec.hash == POLY64:  # by position, then length: the order numpy makes them in
                    out.extend(
                        "c:" + padded[i : i + n]
                        for i in range(len(padded))
                        for n in range(low, high + 1)
                        if i + n <= len(padded)
                    )
                else:  # BLAKE2B specs: by length, then position
                    for n in range(low, high + 1):
                        out.extend("c:" + padded[i : i + n] for i in range(len(padded) - n + 1))
        return out[: self.spec.max_features]

    def bucket(self, feature: str) -> int:
        """The bucket (1..buckets) of one feature string, by the spec's hash."""
        if self.spec.hash == POLY64:
            return poly64_bucket(feature, self.spec.buckets)
        return _bucket(feature, self.spec.buckets)

    def ragged(self, texts: Sequence[str], chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """Bucket ids (1..buckets) of many texts: every text's ids one after the other, and each
        text's count (0 when it has no tokens). Training and serving both featurize through here.

        POLY64 specs hash a whole chunk of texts in numpy (:func:`poly64_ids`); BLAKE2B
        specs, text by text (:meth:`_blake2b_ids`)."""
        tokenized = [tokenize(text, self.spec.normalization) for text in texts]
        if self.spec.hash == BLAKE2B:
            rows = [self._blake2b_ids(tokens) for tokens in tokenized]
            values = np.fromiter((i for row in rows for i in row), dtype=np.int64)
            return values, np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        parts = [poly64_ids(tokenized[i : i + chunk], self.spec).ragged() for i in range(0, len(tokenized), chunk)]
        if not parts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def ids(self, text: str) -> list[int]:
        """Bucket ids (1..buckets) of one text, in the order of :meth:`features`; empty when the
        text has no tokens."""
        return self.ragged([text])[0].tolist()

    def _blake2b_ids(self, tokens: list[str]) -> list[int]:
        """A BLAKE2B spec's ids of one tokenized text, without building every feature string:
        a word's character n-grams are hashed once per process (:func:`_char_ids`), since the
        same words recur from text to text."""
        buckets = self.spec.buckets
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
        """The model's input for a request's texts. A one-text request under a POLY64 spec
        reuses what earlier texts' tokens hashed to (:class:`_Poly64TokenCache`): 0.03 ms when
        every token was seen before, instead of numpy's ~0.09 ms fixed cost, and ~0.02 ms more
        when one was not (half of sms-spam's test texts, after all of train.csv). Several
        texts share numpy's fixed cost, and there the cache's per-token Python costs more
        (benchmarks/RESULTS.md, "Bag featurization per request"), so they hash afresh like
        training's :meth:`ragged`. Tests hold both equal to it over the whole dev set."""
        if self._tokens is not None and len(texts) <= TOKEN_CACHE_MAX_TEXTS:
            ids = pad_ragged(*self._tokens.ids([tokenize(text, self.spec.normalization) for text in texts]))
        elif self.spec.hash == POLY64:  # placed straight into the padded matrix (32 texts: −0.04 ms)
            ids = poly64_ids([tokenize(text, self.spec.normalization) for text in texts], self.spec).padded()
        else:
            ids = pad_ragged(*self.ragged(texts))
        return {"token_ids": self.remap(ids) if self.remap is not None else ids}

    def pruned(self, remap: BucketRemap, kept_buckets_file: str) -> HashedNgramFeaturizer:
        """The same featurizer for a table pruned to ``remap``'s rows."""
        return HashedNgramFeaturizer(replace(self.spec, kept_buckets_file=kept_buckets_file), remap)

    def to_spec(self) -> dict[str, Any]:
        return self.spec.to_dict()


def pad_ragged(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Right-pad ragged ids (``counts[i]`` values per row) with PADDING_ID into one int64 matrix
    (at least one column)."""
    if len(counts) == 1 and counts[0] > 0:  # one request's one text: nothing to pad
        return values.reshape(1, -1)
    width = int(counts.max()) if len(counts) and counts.max() > 0 else 1
    out = np.full((len(counts), width), PADDING_ID, dtype=np.int64)
    out[np.repeat(np.arange(len(counts)), counts), _ragged_arange(counts)] = values
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
