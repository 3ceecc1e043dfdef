"""Rows of the demo catalog, generated in memory: authors, publishers, books with their
author links and reviews, as tuples ready for binary COPY (`load.py` writes them).

Deterministic: every choice comes from the `random.Random` passed in. Fast enough to keep
up with COPY at a million books: the hot loop indexes lists with `rand()`, several times
faster than `choice`, and draws ISBNs from `isbn_pairs`, which keeps weighted sums in
tables (unit-tested equal to `isbn_pair`, which uses the catalog's own check-digit
functions from validation.py, as the slugs use its `slugify`).
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from services.catalog.demo.words import (
    ADJECTIVES,
    DESCRIPTION_ADJECTIVES,
    FICTION_SENTENCES,
    FICTION_TITLES,
    FIRST_NAMES,
    LAST_NAMES,
    NATIONALITIES,
    NONFICTION_SENTENCES,
    NONFICTION_TITLES,
    NOUNS,
    PERSONS,
    PLACES,
    PUBLISHER_PATTERNS,
    REVIEW_CONTENT,
    REVIEW_TITLES,
    SUBTITLES,
    TOPICS,
)
from services.catalog.validation import isbn10_check_digit, isbn13_check_digit, slugify

BATCH_ROWS = 50_000
REVIEW_USERS = 200_000
# ISBN bodies (the 9 digits before the check digit) start here: 978-1-... / 1-..., English.
ISBN_BODY_START = 100_000_000
ISBN_BODY_END = 199_999_999
COVER_BASE = "https://covers.cloudshelf.example"

# Distributions: a uniform draw from each tuple gives the intended shares.
LANGUAGES = ("en",) * 17 + ("fr", "de", "es")
FORMATS = ("paperback",) * 5 + ("hardcover",) * 3 + ("ebook",) * 3 + ("audiobook",)
RATINGS = (1,) * 5 + (2,) * 8 + (3,) * 17 + (4,) * 35 + (5,) * 35
REVIEW_STATUSES = ("published",) * 90 + ("pending",) * 7 + ("rejected",) * 3
BOOK_STATUSES = ("active",) * 194 + ("inactive",) * 3 + ("discontinued",) * 3
PRICE_ENDINGS = (99, 99, 99, 95, 49, 0)
MIN_PRICE_CENTS = 299
MAX_PRICE_CENTS = 8999


# --------------------------------------------------------------------------------------------
# ISBNs


def isbn_pair(body: int) -> tuple[str, str]:
    """The ISBN-13 (978 prefix) and ISBN-10 of one 9-digit body."""
    digits = f"{body:09d}"
    first12 = "978" + digits
    return first12 + isbn13_check_digit(first12), digits + isbn10_check_digit(digits)


def isbn_pairs(first_body: int) -> Iterator[tuple[str, str]]:
    """`isbn_pair` of first_body, first_body + 1, ... (fast: weighted sums from tables)."""
    low_digits = [f"{low:04d}" for low in range(10_000)]
    # Weights of the last four body digits: ISBN-13 positions 8..11, ISBN-10 positions 5..8.
    low13 = [sum(int(c) * w for c, w in zip(d, (1, 3, 1, 3), strict=True)) for d in low_digits]
    low10 = [sum(int(c) * w for c, w in zip(d, (5, 4, 3, 2), strict=True)) for d in low_digits]
    high, start = divmod(first_body, 10_000)
    while True:
        head = f"{high:05d}"
        head13 = sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate("978" + head))
        head10 = sum(int(c) * (10 - i) for i, c in enumerate(head))
        for low in range(start, 10_000):
            digits = head + low_digits[low]
            check10 = (11 - (head10 + low10[low]) % 11) % 11
            yield (
                f"978{digits}{(10 - (head13 + low13[low]) % 10) % 10}",
                digits + ("X" if check10 == 10 else str(check10)),
            )
        high += 1
        start = 0


# --------------------------------------------------------------------------------------------
# Rows


@dataclass(frozen=True)
class World:
    """What the books refer to: ids in the database."""

    fiction_categories: Sequence[int]
    nonfiction_categories: Sequence[int]
    publisher_ids: Sequence[int]
    author_ids: Sequence[int]


@dataclass(frozen=True)
class Vocabulary:
    """Where the books' words and the authors' names come from instead of words.py's
    templates (e.g. a benchmark's realistic English, bench/english.py): `book_texts(rng)`
    gives a book's (title, subtitle or None, description), drawing only from `rng`."""

    first_names: Sequence[str]
    last_names: Sequence[str]
    book_texts: Callable[[random.Random], tuple[str, str | None, str]]


@dataclass
class Batch:
    books: list[tuple[Any, ...]]
    book_authors: list[tuple[int, int, str, int]]
    reviews: list[tuple[Any, ...]]


BOOK_COLUMNS = (
    "id", "isbn_13", "isbn_10", "title", "subtitle", "description", "price", "list_price",
    "page_count", "publication_date", "language_code", "format", "category_id", "publisher_id",
    "stock_quantity", "status", "slug", "cover_image_url", "thumbnail_url", "view_count",
    "purchase_count",
)  # fmt: skip
BOOK_AUTHOR_COLUMNS = ("book_id", "author_id", "role", "order_index")
REVIEW_COLUMNS = (
    "id", "book_id", "user_id", "rating", "title", "content", "is_verified_purchase",
    "helpful_votes", "total_votes", "status",
)  # fmt: skip
AUTHOR_COLUMNS = (
    "id", "first_name", "last_name", "bio", "birth_date", "nationality", "website_url",
)  # fmt: skip


def _prices() -> dict[int, Decimal]:
    return {c: Decimal(c).scaleb(-2) for c in range(0, MAX_PRICE_CENTS + 1)}


def _lower(words: Sequence[str]) -> list[str]:
    return [w.lower() for w in words]


def generate_batches(
    rng: random.Random,
    world: World,
    *,
    books: int,
    first_book_id: int,
    first_isbn_body: int,
    first_review_id: int,
    batch_rows: int = BATCH_ROWS,
    vocabulary: Vocabulary | None = None,
) -> Iterator[Batch]:
    """The rows of `books` new books, in batches of at most `batch_rows` books; their
    texts from `vocabulary` when given, else from words.py's templates.

    The hot loop: random choices index the lists with `rand()` (several times faster than
    `choice`), words and their lower-case forms come from parallel lists.
    """
    rand = rng.random
    prices = _prices()
    start_date = dt.date(1950, 1, 1).toordinal()
    days = dt.date(2026, 12, 31).toordinal() - start_date + 1
    dates = [dt.date.fromordinal(start_date + d) for d in range(days)]
    fiction_cats = list(world.fiction_categories)
    nonfiction_cats = list(world.nonfiction_categories)
    n_fiction_cats, n_nonfiction_cats = len(fiction_cats), len(nonfiction_cats)
    publishers = list(world.publisher_ids)
    n_publishers = len(publishers)
    authors = list(world.author_ids)
    n_authors = len(authors)
    user_ids = [f"user-{i:06d}" for i in range(REVIEW_USERS)]
    user_stride = REVIEW_USERS // 5
    # Picture books and middle grade (the last fiction genre) are short.
    short_cats = set(fiction_cats[-4:])
    fiction_share = n_fiction_cats / max(n_fiction_cats + n_nonfiction_cats, 1)

    adjectives, n_adjectives = ADJECTIVES, len(ADJECTIVES)
    nouns, nouns_l, n_nouns = NOUNS, _lower(NOUNS), len(NOUNS)
    topics, topics_l, n_topics = TOPICS, _lower(TOPICS), len(TOPICS)
    places, n_places = PLACES, len(PLACES)
    description_adjectives, n_description_adjectives = (
        DESCRIPTION_ADJECTIVES,
        len(DESCRIPTION_ADJECTIVES),
    )
    persons, n_persons = PERSONS, len(PERSONS)
    fiction_titles, n_fiction_titles = FICTION_TITLES, len(FICTION_TITLES)
    nonfiction_titles, n_nonfiction_titles = NONFICTION_TITLES, len(NONFICTION_TITLES)
    subtitles, n_subtitles = SUBTITLES, len(SUBTITLES)
    languages, n_languages = LANGUAGES, len(LANGUAGES)
    formats, n_formats = FORMATS, len(FORMATS)
    statuses, n_statuses = BOOK_STATUSES, len(BOOK_STATUSES)
    ratings, n_ratings = RATINGS, len(RATINGS)
    review_statuses, n_review_statuses = REVIEW_STATUSES, len(REVIEW_STATUSES)
    price_endings, n_price_endings = PRICE_ENDINGS, len(PRICE_ENDINGS)
    # Distinct sentences: a start and a step coprime with the number of templates.
    n_sentences = len(FICTION_SENTENCES)
    assert n_sentences == len(NONFICTION_SENTENCES)
    steps = [k for k in range(1, n_sentences) if math.gcd(k, n_sentences) == 1]
    n_steps = len(steps)
    slugs: dict[str, str] = {}
    isbns = isbn_pairs(first_isbn_body)

    review_id = first_review_id
    batch = Batch([], [], [])
    for book_id in range(first_book_id, first_book_id + books):
        isbn13, isbn10 = next(isbns)
        if vocabulary is not None:
            if rand() < fiction_share:
                category = fiction_cats[int(rand() * n_fiction_cats)]
            else:
                category = nonfiction_cats[int(rand() * n_nonfiction_cats)]
            title, subtitle, description = vocabulary.book_texts(rng)
        else:
            noun = int(rand() * n_nouns)
            noun2 = int(rand() * n_nouns)
            topic = int(rand() * n_topics)
            topic2 = int(rand() * n_topics)
            place = places[int(rand() * n_places)]
            words = {
                "adj": adjectives[int(rand() * n_adjectives)],
                "noun": nouns[noun],
                "noun2": nouns[noun2],
                "noun3": nouns[int(rand() * n_nouns)],
                "place": place,
                "topic": topics[topic],
                "topic2": topics[topic2],
            }
            if rand() < fiction_share:
                title = fiction_titles[int(rand() * n_fiction_titles)].format_map(words)
                category = fiction_cats[int(rand() * n_fiction_cats)]
                sentences = FICTION_SENTENCES
            else:
                title = nonfiction_titles[int(rand() * n_nonfiction_titles)].format_map(words)
                category = nonfiction_cats[int(rand() * n_nonfiction_cats)]
                sentences = NONFICTION_SENTENCES
            subtitle = None
            if rand() < 0.3:
                words["n"] = "123"[int(rand() * 3)]
                subtitle = subtitles[int(rand() * n_subtitles)].format_map(words)
            # The description reuses the title's words (narrow terms) and common ones (broad).
            fill = {
                "adj2": description_adjectives[int(rand() * n_description_adjectives)],
                "noun_l": nouns_l[noun],
                "noun2_l": nouns_l[noun2],
                "topic_l": topics_l[topic],
                "topic2_l": topics_l[topic2],
                "place": place,
                "person": persons[int(rand() * n_persons)],
            }
            first = int(rand() * n_sentences)
            description = sentences[first].format_map(fill)
            if rand() < 0.6:
                step = steps[int(rand() * n_steps)]
                description += " " + sentences[(first + step) % n_sentences].format_map(fill)
                if rand() < 0.3:
                    description += " " + sentences[(first + 2 * step) % n_sentences].format_map(
                        fill
                    )

        cents = (2 + int(rand() * 88)) * 100 + price_endings[int(rand() * n_price_endings)]
        cents = min(max(cents, MIN_PRICE_CENTS), MAX_PRICE_CENTS)
        list_cents = cents
        if rand() < 0.4:
            list_cents = min(cents + (1 + int(rand() * 20)) * 100, MAX_PRICE_CENTS)
        if category in short_cats and rand() < 0.5:
            pages = 24 + int(rand() * 41)
        else:
            pages = int(120 + 480 * rand() ** 2)
        skew = rand()
        if skew < 0.9:
            purchases = int(rand() * 51)
        elif skew < 0.99:
            purchases = 51 + int(rand() * 750)
        else:
            purchases = 1000 + int(rand() * 9000)
        slug = slugs.get(title)
        if slug is None:
            if len(slugs) > 100_000:
                slugs.clear()
            slug = slugs[title] = slugify(title)
        batch.books.append(
            (
                book_id,
                isbn13,
                isbn10,
                title,
                subtitle,
                description,
                prices[cents],
                prices[list_cents],
                pages,
                # min(): 1.0 - rand() ** 2.5 is 1.0 when rand() is below ~1e-7.
                dates[min(int(days * (1.0 - rand() ** 2.5)), days - 1)],
                languages[int(rand() * n_languages)],
                formats[int(rand() * n_formats)],
                category,
                publishers[int(rand() * n_publishers)],
                0 if rand() < 0.08 else 1 + int(rand() * 500),
                statuses[int(rand() * n_statuses)],
                f"{slug}-{isbn13}",
                f"{COVER_BASE}/{isbn13}.jpg",
                f"{COVER_BASE}/{isbn13}-thumb.jpg",
                purchases * (5 + int(rand() * 36)) + int(rand() * 201),
                purchases,
            )
        )

        # Authors: a few prolific ones, many with one or two books.
        author = authors[int(n_authors * rand() ** 1.6)]
        batch.book_authors.append((book_id, author, "author", 1))
        if rand() < 0.2:
            chosen = [author]
            extra = 1 + (rand() < 0.25)
            while len(chosen) <= extra:
                author = authors[int(n_authors * rand() ** 1.6)]
                if author not in chosen:
                    chosen.append(author)
                    batch.book_authors.append((book_id, author, "co-author", len(chosen)))

        if rand() < 0.3:
            # Up to 5 distinct users: a start and a stride that cannot wrap onto itself.
            user = int(rand() * REVIEW_USERS)
            stride = 1 + int(rand() * (user_stride - 1))
            for _ in range(1 + int(rand() * 5)):
                rating = ratings[int(rand() * n_ratings)]
                total = int(30 * rand() ** 3)
                titles = REVIEW_TITLES[rating]
                contents = REVIEW_CONTENT[rating]
                batch.reviews.append(
                    (
                        review_id,
                        book_id,
                        user_ids[user],
                        rating,
                        titles[int(rand() * len(titles))],
                        contents[int(rand() * len(contents))],
                        rand() < 0.6,
                        int(rand() * (total + 1)),
                        total,
                        review_statuses[int(rand() * n_review_statuses)],
                    )
                )
                review_id += 1
                user = (user + stride) % REVIEW_USERS

        if len(batch.books) >= batch_rows:
            yield batch
            batch = Batch([], [], [])
    if batch.books:
        yield batch


def publisher_names(rng: random.Random, count: int) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < count:
        name = rng.choice(PUBLISHER_PATTERNS).format(
            adj=rng.choice(ADJECTIVES),
            noun=rng.choice(NOUNS),
            last=rng.choice(LAST_NAMES),
            last2=rng.choice(LAST_NAMES),
            place=rng.choice(PLACES),
        )
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def author_rows(
    rng: random.Random,
    first_id: int,
    count: int,
    first_names: Sequence[str] = FIRST_NAMES,
    last_names: Sequence[str] = LAST_NAMES,
) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    earliest = dt.date(1900, 1, 1).toordinal()
    span = dt.date(2000, 12, 31).toordinal() - earliest
    for i in range(count):
        first = rng.choice(first_names)
        last = rng.choice(last_names)
        nationality = rng.choice(NATIONALITIES)
        bio = (
            f"{first} {last} is a {nationality} writer whose work explores "
            f"{rng.choice(TOPICS).lower()} and {rng.choice(NOUNS).lower()}."
        )
        website = (
            f"https://{slugify(first + ' ' + last)}.example.com" if rng.random() < 0.2 else None
        )
        birth = dt.date.fromordinal(earliest + rng.randrange(span)) if rng.random() < 0.8 else None
        rows.append((first_id + i, first, last, bio, birth, nationality, website))
    return rows
