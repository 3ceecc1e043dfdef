"""Typo tolerance for SearchBooks: "histroy of war" -> "history of war".

The lexicon is the catalog's own (migration 202511431): per english lexeme, the number of
active books holding it (what a query word would match), and the surface words of titles,
subtitles, descriptions and author names with their lexeme (what a correction shows).

A query pays one indexed lookup when its words are all known (the frequencies of their
lexemes, base plus pending changes). Only a word no book holds, or one in at most
RARE_BOOKS books, looks for candidates: the words one edit away (generated here, looked
up by primary key: short words have too few trigrams to be found by similarity), for
longer words also the trigram neighbours (pg_trgm's GIN index, similarity 0.3 and up)
for two edits, and the stop words one edit away. They are ranked by Damerau-Levenshtein distance
against frequency (each edit is worth a factor EDIT_WEIGHT in books); a rare real word
only gives way to one a single edit away in KNOWN_WORD_RATIO times more books. The
corrected query is kept only if it matches an active book through the real tsquery
(looked up when a word is rare enough for that to be in doubt: CHECK_MATCHES_BELOW); of
plain words typed side by side, a correction whose words also stand side by side in a
book goes first ("Cahl Kilroy" -> the author "Cahal Kilroy", not "Call Kilroy"; migration
202511451). The candidate corrections are looked up in one round trip.

Only the words are rewritten: quotes, OR, -exclusions, stop words, punctuation and
spacing stay as typed; excluded words are never corrected (a misspelled exclusion
excludes nothing either way), and the case of the typed word is kept (the search folds
case as Python's str.lower does: the database's LC_CTYPE is a Unicode one).
"""

from __future__ import annotations

import math
import re
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
# Spellings kept per corrected word, and combinations of them checked against the books
# (each check is one GIN lookup, bounded by the rarest word: a few ms).
CHOICES_PER_WORD = 3
MAX_MATCH_CHECKS = 4
# Words typed side by side also try the further spellings as close as the best one, as one
# of them may stand beside the other words in a book (a name: "Cahl Kilroy" -> "Cahal", the
# 4th spelling one edit away, after "call", "carl" and "cal").
PHRASE_CHOICES_PER_WORD = 8
PHRASE_MATCH_CHECKS = 8
# ... when a word kept as typed is in at most so many books: a phrase check reads the
# positions in every book holding all the words, and with common words alone it may check
# all 8 ("hit respect", 2,601 books: 6.5 ms a phrase check, 4.9 a plain one; "Kilroy", 12
# books: both corrections checked in 4 ms; at 1M books).
PHRASE_ANCHOR_BOOKS = 1_000
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

# Letters tried in insertions and substitutions: a-z, and the typed word's own letters
# (edits1). Accented forms are tried only in place of their base letter ("Beyonce" finds
# "beyoncé", "uber" finds "über"): each candidate is sent and looked up, so the list stays
# short (~450 strings for 7 letters, not ~1,300).
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


# websearch_to_tsquery's OR: the word "or" (any case) between words, outside quotes.
_OR = re.compile(r"(?:^|\s)or(?:\s|$)", re.IGNORECASE)


def may_be_misspelt(query: str, matches: int) -> bool:
    """Whether `correct` could change a query that matched `matches` active books. Without
    OR, a match holds every word `correct` looks at (excluded words it leaves alone), so
    each of them is in at least `matches` books: above RARE_BOOKS, every word stays as
    typed and the lookup can be skipped (most searches). With OR (read loosely: a quoted
    "or" counts too) a word may match nothing while the others match plenty."""
    return matches <= RARE_BOOKS or _OR.search(query) is not None


def fold_case(text: str) -> str:
    """Lower-cased as to_tsvector does it under a Unicode LC_CTYPE (C.UTF-8 locally,
    en_US.UTF-8 on a managed server): "Über" -> "über"."""
    return text.lower()


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
                in_quotes = True  # -"phrase": excluded already, by the '-' before it
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
    accents = {a + c + b[1:] for a, b in splits if b for c in ACCENTED.get(b[0], "")}
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
    lexeme: str = ""


def ranked_candidates(
    typed: str, typed_lexeme: str | None, typed_books: int, candidates: Iterable[Candidate]
) -> list[Choice]:
    """The corrections for one typed word, best first (none: keep it). A word no book
    holds may take any candidate within max_edits; a rare one only a candidate one edit
    away that is KNOWN_WORD_RATIO times more frequent; a word in more than RARE_BOOKS
    books none. One choice per lexeme (its spellings match the same books)."""
    if typed_books > RARE_BOOKS:
        return []
    folded = fold_case(typed)
    limit = max_edits(folded) if typed_books == 0 else 1
    scored: list[tuple[float, str, Choice]] = []
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
        lexeme = candidate.lexeme or candidate.word  # a stop word has none
        scored.append(
            (score, candidate.word, Choice(candidate.word, edits, candidate.books, lexeme))
        )
    choices: list[Choice] = []
    for _, _, choice in sorted(scored, key=lambda s: s[:2]):
        if all(choice.lexeme != other.lexeme for other in choices):
            choices.append(choice)
    return choices


def best_candidate(
    typed: str, typed_lexeme: str | None, typed_books: int, candidates: Iterable[Candidate]
) -> Choice | None:
    """The best of ranked_candidates, or None."""
    ranked = ranked_candidates(typed, typed_lexeme, typed_books, candidates)
    return ranked[0] if ranked else None


def alternatives(choices: Sequence[Sequence[Choice]], limit: int) -> list[tuple[Choice, ...]]:
    """Combinations of one choice per word to try, in order: every word's best, then one
    word at a time its next best (the first word's second, the second word's second, ...,
    then the thirds), at most `limit` of them."""
    best = tuple(ranked[0] for ranked in choices)
    combinations = [best]
    for rank in range(1, max((len(r) for r in choices), default=0)):
        for i, ranked in enumerate(choices):
            if rank < len(ranked):
                combinations.append((*best[:i], ranked[rank], *best[i + 1 :]))
    return combinations[:limit]


def match_case(typed: str, word: str) -> str:
    """The correction in the typed word's case: all capitals, a capital first, or as the
    lexicon has it (lower case)."""
    if len(typed) > 1 and typed.lower() != typed and typed.upper() == typed:
        return word.upper()
    if typed[:1].isupper():
        return word[:1].upper() + word[1:]
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

# The words one edit away ($1), by primary key (OFFSET 0 keeps the lookups apart: joined,
# the planner hashes the whole vocabulary for ~500 probes, 10 ms against 1.5 ms at 51,000
# words), and the trigram neighbours of the word ($2, when given; pg_trgm's default
# similarity 0.3, through the GIN index: ~2 ms, where GiST's nearest-neighbour order took
# ~36 ms), with their books.
_CANDIDATES_SQL = f"""
    WITH c AS (
        SELECT w.word, w.lexeme
          FROM unnest($1::text[]) e(word),
               LATERAL (SELECT x.word, x.lexeme FROM book_catalog.spelling_words x
                         WHERE x.word = e.word OFFSET 0) w
        UNION
        (SELECT word, lexeme FROM book_catalog.spelling_words
          WHERE $2::text IS NOT NULL AND word % $2::text
          ORDER BY similarity(word, $2::text) DESC, word LIMIT {TRIGRAM_CANDIDATES})
    )
    SELECT c.word, c.lexeme, {_BOOKS.format("c.lexeme")} AS books FROM c"""

_BEST_SQL = "SELECT book_catalog.search_best_correction($1::text[], $2::bool)"


async def candidates_of(pool: asyncpg.Pool, word: str) -> list[Candidate]:
    folded = fold_case(word)
    trigram = folded if max_edits(folded) > 1 else None
    edits = edits1(folded)
    rows = await pool.fetch(_CANDIDATES_SQL, sorted(edits), trigram)
    return [Candidate(row["word"], row["lexeme"], row["books"]) for row in rows] + [
        Candidate(word, "", STOP_WORD_BOOKS) for word in sorted(edits & STOP_WORDS)
    ]


async def correct(pool: asyncpg.Pool, query: str) -> str | None:
    """The query with its misspelled words corrected, or None when it is searched as
    typed (every word known well enough, no better spelling, or no correction that
    matches a book: when the best spellings do not meet in one book, the next ones are
    tried, so "noices" becomes "voices" or "notices" as the other words say)."""
    words = correctable_words(query)
    if not words:
        return None
    rows = await pool.fetch(_FREQUENCIES_SQL, [fold_case(w.text) for w in words])
    suspects: list[tuple[QueryWord, list[Choice]]] = []
    kept_books: list[int] = []  # the books of the words kept as typed (with a lexeme)
    for word, row in zip(words, rows, strict=True):
        if row["lexeme"] is None:
            continue
        ranked: list[Choice] = []
        if row["books"] <= RARE_BOOKS and len(suspects) < MAX_CORRECTED_WORDS:
            candidates = await candidates_of(pool, word.text)
            ranked = ranked_candidates(word.text, row["lexeme"], row["books"], candidates)
        if ranked:
            suspects.append((word, ranked))
        else:
            kept_books.append(row["books"])
    if not suspects:
        return None
    # A phrase is checked when a word kept as typed is rare enough to bound the checks.
    phrase = reads_as_a_phrase(query) and 0 < min(kept_books, default=0) <= PHRASE_ANCHOR_BOOKS
    suspects = [(word, _tried(ranked, phrase)) for word, ranked in suspects]
    # The corrections in order, up to the first whose words are all common enough to be
    # taken to meet (it needs no look-up); the others are looked up at once.
    checked: list[str] = []
    checks = PHRASE_MATCH_CHECKS if phrase else MAX_MATCH_CHECKS
    for combination in alternatives([ranked for _, ranked in suspects], checks):
        books = kept_books + [c.books for c in combination if c.word not in STOP_WORDS]
        if not books:
            break  # this reading leaves only stop words: the whole catalog
        replacements = zip(suspects, combination, strict=True)
        corrected = rewrite(query, [(w, match_case(w.text, c.word)) for (w, _), c in replacements])
        if min(books) > CHECK_MATCHES_BELOW:
            return await _best_of(pool, checked, phrase) or corrected
        checked.append(corrected)
    return await _best_of(pool, checked, phrase)


def _tried(ranked: list[Choice], phrase: bool) -> list[Choice]:
    """The spellings tried for one word: the CHOICES_PER_WORD best; for words typed as a
    phrase, also those as close as the best, up to PHRASE_CHOICES_PER_WORD."""
    tried = ranked[:CHOICES_PER_WORD]
    if phrase:
        closest = [c for c in ranked[CHOICES_PER_WORD:] if c.edits == ranked[0].edits]
        tried += closest[: PHRASE_CHOICES_PER_WORD - len(tried)]
    return tried


async def _best_of(pool: asyncpg.Pool, corrections: list[str], phrase: bool) -> str | None:
    """With `phrase`, the first of the corrections whose words stand together in a book
    (a name, a title: see search_best_correction), else the first that matches a book;
    None when none does."""
    if not corrections:
        return None
    best = await pool.fetchval(_BEST_SQL, corrections, phrase)
    return None if best is None else corrections[best - 1]


def reads_as_a_phrase(query: str) -> bool:
    """Whether the query is plain words (two or more, no quotes, OR or exclusions), whose
    correction is best when its words also stand together in a book."""
    if '"' in query or _OR.search(query) is not None:
        return False
    words = query.split()
    return len(words) > 1 and not any(word.startswith("-") for word in words)


async def fold_spelling_changes(pool: asyncpg.Pool) -> int:
    """Folds the books' pending lexeme differences into the counts, and prunes the words
    no active book holds any more (the fold-spelling job, every few minutes: readers add
    the pending rows of each word they look up, so the fewer the cheaper)."""
    folded: int = await pool.fetchval("SELECT book_catalog.fold_spelling_changes()")
    return folded
