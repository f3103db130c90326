"""Text -> index terms. Korean is agglutinative: "개혁을", "개혁은" and "개혁이다" are one word to a reader but three to
a whitespace split, so the default analyser keeps Kiwi's content morphemes (nouns, verb and adjective stems, roots,
foreign words, hanja and numbers) and drops particles and endings."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache

Analyzer = Callable[[Sequence[str]], list[list[str]]]

# Kiwi's Sejong-style tags: general/proper nouns, numerals, verb and adjective stems, roots, foreign words, hanja,
# numbers (irregular stems come tagged "VV-I"). Bound nouns (NNB: 것, 수), particles (J*) and endings (E*) are left out.
CONTENT_TAGS = frozenset({"NNG", "NNP", "NR", "VV", "VA", "XR", "SL", "SH", "SN"})
ANALYZERS = ("kiwi", "whitespace")


class MissingRetrievalDependency(ImportError):
    """An optional retrieval package is not installed; the message says which extra installs it."""


def whitespace_terms(texts: Sequence[str]) -> list[list[str]]:
    """The baseline: lower-cased whitespace tokens with surrounding punctuation stripped."""
    return [[t for t in (w.strip(".,;:!?\"'()[]<>「」『』“”‘’·").lower() for w in text.split()) if t] for text in texts]


@lru_cache(maxsize=1)
def _kiwi():
    try:
        from kiwipiepy import Kiwi
    except ImportError as err:
        raise MissingRetrievalDependency(
            "the kiwi analyser needs kiwipiepy: pip install 'suneung-lit[retrieval]' "
            "(its model package is an 88 MB source archive that builds on install)"
        ) from err
    return Kiwi()


def kiwi_terms(texts: Sequence[str]) -> list[list[str]]:
    """Content morphemes of each text, lower-cased (Latin words), in order; one Kiwi instance per process."""
    tokenized: Iterable = _kiwi().tokenize(list(texts))
    return [[t.form.lower() for t in tokens if t.tag.split("-")[0] in CONTENT_TAGS] for tokens in tokenized]


def get_analyzer(name: str) -> Analyzer:
    if name == "kiwi":
        return kiwi_terms
    if name == "whitespace":
        return whitespace_terms
    raise ValueError(f"unknown analyser {name!r}; choose one of {', '.join(ANALYZERS)}")
