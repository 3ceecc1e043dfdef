"""A realistic English vocabulary for the search benchmark's catalog (issue 20): words drawn
by their real frequencies, author names from real name lists.

The demo generator's vocabulary is small (a few hundred nouns and topics in templates): every
word matches a sizeable share of the books and hardly any matches a handful, which hides
how search behaves on the long tail. Here:

- descriptions are 80-380 words drawn from wordfreq's 50,000 most frequent English words,
  with their frequencies ("the" 5%, "time" 0.2%, most words under one in a million): the
  commonest content words end up in 20-50% of the books, most words in a handful;
- titles are one to five content words (the 150 most frequent words, nearly all function
  words, left out), drawn with flattened frequencies (titles favour rarer words), a third
  with "The" in front; subtitles (30%) two to five such words;
- authors' first and last names come from Faker's English-speaking locales' name lists.

Deterministic for a seed: every draw comes from the generator's `random.Random`.
"""

from __future__ import annotations

import itertools
import random
from functools import cache

from services.catalog.demo import Vocabulary

WORDS = 50_000
# The most frequent words are nearly all function words ("the", "of", "is", ...): none in titles.
FUNCTION_WORDS = 150
# Titles draw with frequency ** TITLE_FLATTENING: rarer words than running text.
TITLE_FLATTENING = 0.6
NAME_LOCALES = ("en_US", "en_GB", "en_IE", "en_NZ")


def ranked_words() -> list[tuple[str, float]]:
    """The WORDS most frequent plain (ASCII letters only) English words, most frequent first."""
    from wordfreq import get_frequency_dict

    frequencies = get_frequency_dict("en")
    plain = ((w, f) for w, f in frequencies.items() if w.isascii() and w.isalpha())
    return sorted(plain, key=lambda item: (-item[1], item[0]))[:WORDS]


def _names() -> tuple[list[str], list[str]]:
    """Distinct first and last names of Faker's English-speaking locales, sorted."""
    import importlib

    first: set[str] = set()
    last: set[str] = set()
    for locale in NAME_LOCALES:
        provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        first.update(provider.first_names)
        last.update(provider.last_names)
    plain = str.isalpha
    return sorted(n for n in first if plain(n)), sorted(n for n in last if plain(n))


@cache
def english_vocabulary() -> Vocabulary:
    ranked = ranked_words()
    words = [w for w, _ in ranked]
    running = list(itertools.accumulate(f for _, f in ranked))
    content = ranked[FUNCTION_WORDS:]
    title_words = [w.capitalize() for w, _ in content]
    title_weights = list(itertools.accumulate(f**TITLE_FLATTENING for _, f in content))
    first_names, last_names = _names()

    def book_texts(rng: random.Random) -> tuple[str, str | None, str]:
        rand = rng.random
        title = " ".join(rng.choices(title_words, cum_weights=title_weights, k=1 + int(rand() * 5)))
        if rand() < 0.33:
            title = "The " + title
        subtitle = None
        if rand() < 0.3:
            subtitle = " ".join(
                rng.choices(title_words, cum_weights=title_weights, k=2 + int(rand() * 4))
            )
        tokens = rng.choices(words, cum_weights=running, k=80 + int(300 * rand() ** 2))
        sentences: list[str] = []
        start = 0
        while start < len(tokens):
            end = start + 6 + int(rand() * 13)
            sentence = tokens[start:end]
            sentences.append(" ".join([sentence[0].capitalize(), *sentence[1:]]) + ".")
            start = end
        return title, subtitle, " ".join(sentences)

    return Vocabulary(first_names, last_names, book_texts)
