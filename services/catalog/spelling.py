"""Typo tolerance for SearchBooks: "histroy of war" -> "history of war".

The lexicon is the catalog's own (migration 202511431): per english lexeme, the number of
active books holding it (what a query word would match), and the surface words of titles,
subtitles, descriptions and author names with their lexeme (what a correction shows).

A query pays one indexed lookup when its words are all known (the frequencies of their
lexemes, base plus pending changes). Only a word no book holds, or one in at most
RARE_BOOKS books, looks for candidates: the words one edit away (generated here, looked
up by primary key: short words have too few trigrams to be found by similarity), for
longer words also the trigram neighbours (pg_trgm's GiST index, nearest first) for two
edits, and the stop words one edit away. They are ranked by Damerau-Levenshtein distance
against frequency (each edit is worth a factor EDIT_WEIGHT in books); a rare real word
only gives way to one a single edit away in KNOWN_WORD_RATIO times more books. The
corrected query is kept only if it matches an active book through the real tsquery
(looked up when a word is rare enough for that to be in doubt: CHECK_MATCHES_BELOW).

Only the words are rewritten: quotes, OR, -exclusions, stop words, punctuation and
spacing stay as typed; excluded words are never corrected (a misspelled exclusion
excludes nothing either way), and the case of the typed word is kept where the search
folds it (ASCII letters: the search's C-locale stemmer lower-cases those only).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import asyncpg

# A known word is looked at again only when at most this many books hold it: a word in
# more books is a word, whatever its neighbours. Below it, a candidate one edit away must
# be in KNOWN_WORD_RATIO times more books ("bard" in 200 books stays "bard" beside "hard"
# in 30,000; "histroy" in 2 books' descriptions becomes "history" in 50,000).
RARE_BOOKS = 5
KNOWN_WORD_RATIO = 1000
# One edit costs as much as a factor of EDIT_WEIGHT in books: a word one edit away in 10
# books beats one two edits away in 9,000, not one in 11,000.
EDIT_WEIGHT = 1000.0
# Words shorter than this are never corrected (one edit is half of them), nor longer
# than the lexicon's longest (its words are 3-40 letters).
MIN_LETTERS = 3
MAX_LETTERS = 40
# At most so many words of one query are corrected (each costs a candidate lookup).
MAX_CORRECTED_WORDS = 4
# Trigram neighbours examined per word (ordered by similarity).
TRIGRAM_CANDIDATES = 50
# Whether the corrected words meet in one book is looked up (through the GIN index, at a
# cost that follows the rarest word's books) only when some word is in at most so many
# books: words each in more books than this are taken to meet (looking would read posting
# lists of that length, ~100 ms for a word of 200,000 books, to confirm the near-certain).
CHECK_MATCHES_BELOW = 20_000

# The english configuration's stop words (PostgreSQL's tsearch_data/english.stop): never
# in the lexicon (no lexeme), yet what a typo is often one edit from ("abotu", "wfere").
# A word no book holds may be corrected to one (the search then ignores it, as it would
# the word spelled right); a rare real word never is.
STOP_WORDS = frozenset(
    """
    i me my myself we our ours ourselves you your yours yourself yourselves he him his
    himself she her hers herself it its itself they them their theirs themselves what
    which who whom this that these those am is are was were be been being have has had
    having do does did doing a an the and but if or because as until while of at by for
    with about against between into through during before after above below to from up
    down in out on off over under again further then once here there when where why how
    all any both each few more most other some such no nor not only own same so than too
    very s t can will just don should now
    """.split()
)
# What a stop word weighs against a catalog word: in every book.
STOP_WORD_BOOKS = 1_000_000

_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
# Letters tried in insertions and substitutions: a-z, and the typed word's own letters
# (edits1). Accented forms are tried only in place of their base letter ("Beyonce" finds
# "beyoncé"), and capital ones only first (the search keeps the case of non-ASCII letters:
# "Über" stays "Über", one substitution from "uber"): each candidate is sent and looked
# up, so the list stays short (~450 strings for 7 letters, not ~1,300).
ALPHABET = "abcdefghijklmnopqrstuvwxyz"
ACCENTED = {
    "a": "àáâãäåæ",
    "c": "ç",
    "e": "èéêë",
    "i": "ìíîï",
    "n": "ñ",
    "o": "òóôõöøœ",
    "s": "ß",
    "u": "ùúûü",
    "y": "ýÿ",
}


def ascii_lower(text: str) -> str:
    """Lower-cases A-Z only, as to_tsvector does under the cluster's C locale."""
    return text.translate(_ASCII_LOWER)


@dataclass(frozen=True)
class QueryWord:
    """A word of the query that may be corrected, and where it is in the text."""

    start: int
    end: int
    text: str


def correctable_words(query: str) -> list[QueryWord]:
    """The words of a web-search query that a correction may replace: runs of letters
    (digits make a token a code or a number: left alone) of at least MIN_LETTERS, outside
    an exclusion. websearch_to_tsquery's syntax: "quoted phrase" (its words count), OR,
    and -word or -"phrase" at the start of a chunk, which excludes."""
    words: list[QueryWord] = []
    in_quotes = False
    excluded = False  # the current chunk (or quoted phrase) is an exclusion
    chunk_start = True
    i = 0
    while i < len(query):
        ch = query[i]
        if ch == '"':
            if in_quotes:
                in_quotes = False
                excluded = False
            else:
                in_quotes = True
                # -"phrase": the '-' began the chunk this quote continues.
                excluded = excluded and not chunk_start
            chunk_start = False
            i += 1
            continue
        if ch.isspace():
            if not in_quotes:
                excluded = False
                chunk_start = True
            i += 1
            continue
        if chunk_start and ch == "-" and not in_quotes:
            excluded = True
            chunk_start = False
            i += 1
            continue
        chunk_start = False
        if ch.isalnum():
            end = i
            while end < len(query) and query[end].isalnum():
                end += 1
            token = query[i:end]
            if not excluded and token.isalpha() and MIN_LETTERS <= len(token) <= MAX_LETTERS:
                words.append(QueryWord(i, end, token))
            i = end
            continue
        i += 1
    return words


def max_edits(word: str) -> int:
    """How far a correction may be: one edit up to 5 letters, two from 6 (two edits in a
    four-letter word leave half of it: "bard" -> "word")."""
    return 1 if len(word) <= 5 else 2


def edits1(word: str, alphabet: str = ALPHABET) -> set[str]:
    """Every string one deletion, transposition, substitution or insertion away (the
    letters as ALPHABET says)."""
    letters = "".join(dict.fromkeys(alphabet + word))
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    deletes = {a + b[1:] for a, b in splits if b}
    transposes = {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    replaces = {a + c + b[1:] for a, b in splits if b for c in letters if c != b[0]}
    inserts = {a + c + b for a, b in splits for c in letters}
    accents = {a + c + b[1:] for a, b in splits if b for c in ACCENTED.get(b[0].lower(), "")}
    if word:
        accents |= {c.upper() + word[1:] for c in ACCENTED.get(word[0].lower(), "")}
    return (deletes | transposes | replaces | inserts | accents) - {word}


def damerau_levenshtein(a: str, b: str) -> int:
    """Edits (insert, delete, substitute, swap two neighbours) from a to b; the optimal
    string alignment form (no substring edited twice), as spelling checkers use."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], previous2[j - 2] + 1)
        previous2, previous = previous, current
    return previous[len(b)]


@dataclass(frozen=True)
class Candidate:
    word: str
    lexeme: str
    books: int


@dataclass(frozen=True)
class Choice:
    word: str
    edits: int
    books: int


def best_candidate(
    typed: str, typed_lexeme: str | None, typed_books: int, candidates: Iterable[Candidate]
) -> Choice | None:
    """The correction for one typed word, or None to keep it. A word no book holds takes
    its best candidate within max_edits; a rare one only a candidate one edit away that
    is KNOWN_WORD_RATIO times more frequent; a word in more than RARE_BOOKS books none."""
    if typed_books > RARE_BOOKS:
        return None
    folded = ascii_lower(typed)
    limit = max_edits(folded) if typed_books == 0 else 1
    best: tuple[float, str, Choice] | None = None
    for candidate in candidates:
        if candidate.books <= 0 or candidate.lexeme == typed_lexeme:
            continue
        if typed_books and candidate.word in STOP_WORDS:
            continue
        if typed_books and candidate.books < typed_books * KNOWN_WORD_RATIO:
            continue
        edits = damerau_levenshtein(folded, candidate.word)
        if not 0 < edits <= limit:
            continue
        score = edits - math.log(candidate.books, EDIT_WEIGHT)
        key = (score, candidate.word, Choice(candidate.word, edits, candidate.books))
        if best is None or key[:2] < best[:2]:
            best = key
    return best[2] if best else None


def match_case(typed: str, word: str) -> str:
    """The correction in the typed word's case (A-Z only: the search folds no other)."""
    if len(typed) > 1 and typed.translate(_ASCII_LOWER) != typed and typed.upper() == typed:
        return word.translate(_ASCII_UPPER)
    if typed[:1].isupper():
        return word[:1].translate(_ASCII_UPPER) + word[1:]
    return word


def rewrite(query: str, replacements: Sequence[tuple[QueryWord, str]]) -> str:
    """The query with the given words replaced, everything else as typed."""
    parts: list[str] = []
    position = 0
    for word, replacement in sorted(replacements, key=lambda r: r[0].start):
        parts += [query[position : word.start], replacement]
        position = word.end
    parts.append(query[position:])
    return "".join(parts)


# Books per lexeme: the folded count plus the pending changes (see the migration).
_BOOKS = """(SELECT coalesce(sum(n), 0)::int FROM (
                SELECT books AS n FROM book_catalog.spelling_lexemes WHERE lexeme = {0}
                UNION ALL
                SELECT delta FROM book_catalog.spelling_lexeme_changes WHERE lexeme = {0}) f)"""

# Per word: its lexeme (NULL for a stop word, or a word the parser splits) and its books.
_FREQUENCIES_SQL = f"""
    SELECT w.i::int AS i, x.lexeme, CASE WHEN x.lexeme IS NULL THEN 0 ELSE
           {_BOOKS.format("x.lexeme")} END AS books
      FROM unnest($1::text[]) WITH ORDINALITY w(word, i),
           LATERAL (SELECT CASE WHEN cardinality(a) = 1 THEN a[1] END AS lexeme
                      FROM tsvector_to_array(to_tsvector('english', w.word)) a) x
     ORDER BY w.i"""

# The words one edit away ($1) and the trigram neighbours of the word ($2, when given).
_CANDIDATES_SQL = f"""
    WITH c AS (
        -- A join, not = ANY: the planner would weigh each of ~1,000 array elements.
        SELECT w.word, w.lexeme
          FROM unnest($1::text[]) e(word) JOIN book_catalog.spelling_words w USING (word)
        UNION
        (SELECT word, lexeme FROM book_catalog.spelling_words
          WHERE $2::text IS NOT NULL
          ORDER BY word <-> $2::text LIMIT {TRIGRAM_CANDIDATES})
    )
    SELECT c.word, c.lexeme, {_BOOKS.format("c.lexeme")} AS books FROM c"""

_MATCHES_SQL = "SELECT book_catalog.search_matches_any($1::text)"


async def candidates_of(pool: asyncpg.Pool, word: str) -> list[Candidate]:
    folded = ascii_lower(word)
    trigram = folded if max_edits(folded) > 1 else None
    edits = edits1(folded)
    rows = await pool.fetch(_CANDIDATES_SQL, sorted(edits), trigram)
    return [Candidate(row["word"], row["lexeme"], row["books"]) for row in rows] + [
        Candidate(word, "", STOP_WORD_BOOKS) for word in sorted(edits & STOP_WORDS)
    ]


async def correct(pool: asyncpg.Pool, query: str) -> str | None:
    """The query with its misspelled words corrected, or None when it is searched as
    typed (every word known well enough, no better spelling, or the correction would
    match nothing)."""
    words = correctable_words(query)
    if not words:
        return None
    rows = await pool.fetch(_FREQUENCIES_SQL, [ascii_lower(w.text) for w in words])
    replacements: list[tuple[QueryWord, str]] = []
    books_per_word: list[int] = []  # after correction, of the words with a lexeme
    for word, row in zip(words, rows, strict=True):
        if row["lexeme"] is None:
            continue
        choice = None
        if row["books"] <= RARE_BOOKS and len(replacements) < MAX_CORRECTED_WORDS:
            candidates = await candidates_of(pool, word.text)
            choice = best_candidate(word.text, row["lexeme"], row["books"], candidates)
        if choice is not None:
            replacements.append((word, match_case(word.text, choice.word)))
        if choice is None or choice.word not in STOP_WORDS:
            books_per_word.append(choice.books if choice else row["books"])
    if not replacements or not books_per_word:
        return None  # nothing to correct, or only stop words would be left to search
    corrected = rewrite(query, replacements)
    if min(books_per_word) <= CHECK_MATCHES_BELOW and not await pool.fetchval(
        _MATCHES_SQL, corrected
    ):
        return None
    return corrected


async def fold_spelling_changes(pool: asyncpg.Pool) -> int:
    """Folds the books' pending lexeme differences into the counts, and prunes the words
    no active book holds any more (the fold-spelling job, every few minutes: readers add
    the pending rows of each word they look up, so the fewer the cheaper)."""
    folded: int = await pool.fetchval("SELECT book_catalog.fold_spelling_changes()")
    return folded
