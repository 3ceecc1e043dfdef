"""The pure parts of typo tolerance: which words of a query may change, edit distances,
the choice of a correction, and rewriting the query around it."""

from __future__ import annotations

from services.catalog.spelling import (
    KNOWN_WORD_RATIO,
    RARE_BOOKS,
    STOP_WORD_BOOKS,
    Candidate,
    Choice,
    alternatives,
    best_candidate,
    correctable_words,
    damerau_levenshtein,
    edits1,
    fold_case,
    match_case,
    may_be_misspelt,
    ranked_candidates,
    reads_as_a_phrase,
    rewrite,
)


def words_of(query: str) -> list[str]:
    return [w.text for w in correctable_words(query)]


def test_correctable_words_follow_the_web_search_syntax() -> None:
    assert words_of("histroy of war") == ["histroy", "war"]
    assert words_of('"lord of the rnigs" -towers') == ["lord", "the", "rnigs"]
    assert words_of('tolkien -"two towers" rings') == ["tolkien", "rings"]
    assert words_of("well-known -bad-word x2 1984 ab") == ["well", "known"]
    assert words_of("histroy OR hsitory") == ["histroy", "hsitory"]  # OR: too short
    assert words_of("Über café") == ["Über", "café"]
    assert words_of("") == []
    assert words_of("x" * 41 + " " + "y" * 40) == ["y" * 40]
    # Spans index the text as typed.
    word = correctable_words("  a  histroy!")[0]
    assert (word.start, word.end) == (5, 12)


def test_damerau_levenshtein() -> None:
    assert damerau_levenshtein("histroy", "history") == 1  # a swap is one edit
    assert damerau_levenshtein("hstory", "history") == 1
    assert damerau_levenshtein("historyy", "history") == 1
    assert damerau_levenshtein("histary", "history") == 1
    assert damerau_levenshtein("hsitroy", "history") == 2
    assert damerau_levenshtein("ca", "abc") == 3  # optimal string alignment, not full DL
    assert damerau_levenshtein("", "abc") == 3
    assert damerau_levenshtein("same", "same") == 0


def test_edits1_are_exactly_the_strings_one_edit_away() -> None:
    found = edits1("cat", alphabet="abct")
    assert {"at", "ct", "ca", "act", "cta", "bat", "cab", "caat", "catt", "tcat"} <= found
    assert "cat" not in found
    assert all(damerau_levenshtein("cat", e) == 1 for e in found)
    # The typed word's own letters and accented ones are tried too.
    assert "café" in edits1("cafe")
    assert "über" in edits1("uber")
    assert "книга" in edits1("кнгиа")


def choose(typed: str, books: int, *candidates: tuple[str, int]) -> str | None:
    choice = best_candidate(
        typed, typed, books, [Candidate(word, word + "-lexeme", n) for word, n in candidates]
    )
    return choice.word if choice else None


def test_an_unknown_word_takes_the_closest_most_frequent_spelling() -> None:
    assert choose("histroy", 0, ("history", 50), ("histology", 900)) == "history"
    assert choose("histroy", 0, ("history", 50), ("histrion", 3)) == "history"
    # An edit is worth a factor of 1,000 in books.
    assert choose("hstorx", 0, ("hstory", 10), ("history", 9_000)) == "hstory"
    assert choose("hstorx", 0, ("hstory", 10), ("history", 11_000)) == "history"
    # Too far: two edits in a short word, three in a long one; nothing without books.
    assert choose("bard", 0, ("word", 10_000)) is None
    assert choose("hsitroyy", 0, ("history", 10_000)) is None
    assert choose("histroy", 0, ("history", 0)) is None
    assert choose("histroy", 0) is None


def test_a_known_word_changes_only_for_a_far_more_frequent_one_edit_away() -> None:
    assert choose("histroy", 2, ("history", 2 * KNOWN_WORD_RATIO)) == "history"
    assert choose("histroy", 2, ("history", 2 * KNOWN_WORD_RATIO - 1)) is None
    assert choose("bard", 1, ("hard", 30_000)) == "hard"
    assert choose("bard", 200, ("hard", 1_000_000)) is None  # more than RARE_BOOKS
    assert choose("hsitroy", 1, ("history", 1_000_000)) is None  # two edits
    assert choose("qiut", RARE_BOOKS + 1, ("quit", 10**9)) is None


def test_a_typo_of_a_stop_word_becomes_the_stop_word_a_rare_word_never() -> None:
    assert choose("abotu", 0, ("about", STOP_WORD_BOOKS), ("abbott", 500)) == "about"
    assert choose("thy", 3, ("the", STOP_WORD_BOOKS)) is None


def test_a_spelling_of_the_same_lexeme_is_no_correction() -> None:
    choice = best_candidate("histories", "histori", 0, [Candidate("historie", "histori", 40)])
    assert choice is None


def test_candidates_are_ranked_one_per_lexeme() -> None:
    ranked = ranked_candidates(
        "noices",
        "noic",
        0,
        [
            Candidate("voices", "voic", 28_000),
            Candidate("notices", "notic", 9_000),
            Candidate("noticed", "notic", 9_000),
            Candidate("noises", "nois", 4_000),
            Candidate("nice", "nice", 40_000),  # two edits
        ],
    )
    assert [c.word for c in ranked] == ["voices", "notices", "noises", "nice"]
    assert ranked[0] == Choice("voices", 1, 28_000, "voic")


def test_alternatives_vary_one_word_at_a_time_best_first() -> None:
    a1, a2, a3, b1, b2 = (Choice(w, 1, 1) for w in ("a1", "a2", "a3", "b1", "b2"))
    combinations = alternatives([[a1, a2, a3], [b1, b2]], limit=10)
    assert combinations == [(a1, b1), (a2, b1), (a1, b2), (a3, b1)]
    assert alternatives([[a1, a2, a3], [b1, b2]], limit=2) == [(a1, b1), (a2, b1)]
    assert alternatives([[a1]], limit=4) == [(a1,)]


def test_the_typed_case_is_kept() -> None:
    assert match_case("histroy", "history") == "history"
    assert match_case("Histroy", "history") == "History"
    assert match_case("HISTROY", "history") == "HISTORY"
    assert match_case("I", "a") == "A"
    # Beyond ASCII too: the search folds every letter.
    assert match_case("uber", "über") == "über"
    assert match_case("Uber", "über") == "Über"
    assert match_case("CAFE", "café") == "CAFÉ"
    assert fold_case("ÜBER Straße") == "über straße"


def test_rewrite_replaces_only_the_words() -> None:
    query = '"Histroy  of" -war, OR hsitory!'
    first, second = correctable_words(query)[0], correctable_words(query)[-1]
    assert rewrite(query, [(second, "history"), (first, "History")]) == (
        '"History  of" -war, OR history!'
    )
    assert rewrite(query, []) == query


def test_only_a_search_with_few_matches_or_an_or_may_be_misspelt() -> None:
    # Without OR every match holds every word: more matches than a rare word's books
    # means no word is rare.
    assert may_be_misspelt("histroy of war", 0)
    assert may_be_misspelt("histroy of war", RARE_BOOKS)
    assert not may_be_misspelt("histroy of war", RARE_BOOKS + 1)
    assert not may_be_misspelt('"lord of the rings" -towers', 5_000)
    # With OR a word may match nothing while the other matches thousands.
    for query in ("war OR histroy", "war or histroy", "war Or histroy"):
        assert may_be_misspelt(query, 5_000)
    # "or" inside a word is no operator.
    assert not may_be_misspelt("order of the phoenix", 5_000)
    assert not may_be_misspelt("doctor who", 5_000)


def test_plain_words_read_as_a_phrase() -> None:
    assert reads_as_a_phrase("Cahl Kilroy")
    assert reads_as_a_phrase("histroy of war")
    assert not reads_as_a_phrase("histroy")  # one word: nothing to stand beside
    assert not reads_as_a_phrase('"Cahl" Kilroy')
    assert not reads_as_a_phrase("Cahl or Kilroy")
    assert not reads_as_a_phrase("Cahl -Kilroy")
