"""Data layer: restartable corpus readers, tokenizers and vocabularies.

* :mod:`lmlab.data.readers` - ``open_text`` (.gz/.bz2/.xz, strict decoding with file:line errors),
  ``TextCorpus`` (lines for word2vec / LM corpora), ``read_labelled`` / ``load_examples`` (CSV, TSV, JSONL,
  fastText, one-file-per-label lines, the aclImdb layout) returning :class:`Example` objects.
* :mod:`lmlab.data.tokenizers` - ``WhitespaceTokenizer``, ``WordTokenizer`` (with the ``register_segmenter``
  hook), ``CharTokenizer``, ``KerasTokenizer`` + ``pad_sequences``, ``BPETokenizer``; all save to / load from one
  JSON file.
* :mod:`lmlab.data.codec` - ``Codec``: a tokenizer + a ``Vocab`` + plain options, the text <-> ids layer of
  every family.
* :mod:`lmlab.data.vocab` - ``Vocab`` (specials ``<pad> <unk> <bos> <eos>`` at ids 0..3) and ``build_vocab``.
* :mod:`lmlab.data.loader` - ``EpochLoader``: seeded, resumable, distributed-aware batching.
"""

from lmlab.data.codec import Codec
from lmlab.data.readers import (
    AclImdbCorpus,
    CSVCorpus,
    Example,
    FastTextCorpus,
    JSONLCorpus,
    LabelledCorpus,
    LinesPerLabelCorpus,
    TextCorpus,
    TokenizedCorpus,
    check_labels,
    detect_format,
    load_examples,
    open_text,
    read_labelled,
    require_restartable,
)
from lmlab.data.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    KerasTokenizer,
    WhitespaceTokenizer,
    WordTokenizer,
    load_tokenizer,
    pad_sequences,
    register_segmenter,
    tokenizer_from_dict,
)
from lmlab.data.vocab import DEFAULT_SPECIALS, Vocab, build_vocab

__all__ = [
    "DEFAULT_SPECIALS",
    "AclImdbCorpus",
    "BPETokenizer",
    "CSVCorpus",
    "CharTokenizer",
    "Codec",
    "EpochLoader",
    "Example",
    "FastTextCorpus",
    "JSONLCorpus",
    "KerasTokenizer",
    "LabelledCorpus",
    "LinesPerLabelCorpus",
    "TextCorpus",
    "TokenizedCorpus",
    "Vocab",
    "WhitespaceTokenizer",
    "WordTokenizer",
    "build_vocab",
    "check_labels",
    "detect_format",
    "load_examples",
    "load_tokenizer",
    "open_text",
    "pad_sequences",
    "read_labelled",
    "register_segmenter",
    "require_restartable",
    "tokenizer_from_dict",
]


def __getattr__(name: str):
    # EpochLoader pulls in torch; import it only when asked for.
    if name == "EpochLoader":
        from lmlab.data.loader import EpochLoader

        return EpochLoader
    raise AttributeError(f"module 'lmlab.data' has no attribute {name!r}")
