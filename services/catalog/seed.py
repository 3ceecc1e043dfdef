"""Demo data for the catalog: a category tree, publishers, authors, books, links and reviews.

`seed_catalog(dsn, books)` ADDS data to a migrated `book_catalog` schema; it works on an empty
catalog and again on a non-empty one (the category tree and the publishers are reused, new rows
get ids, ISBNs and slugs after the existing ones). Rows come from `random.Random(seed)`, so a
given seed on a given database state gives the same catalog.

Speed (1,000,000 books in minutes): rows are generated in bounded batches and streamed with
binary COPY. Inside one transaction the user triggers of books, book_authors and reviews are
disabled, and afterwards the search vectors and rating aggregates of the new books are set with
set-based UPDATEs using the triggers' own expressions; then the triggers are enabled again.
A bulk run (BULK_BOOKS or more, and at least as many books as the catalog has) also drops the
plain indexes of books during the load and builds them again before the commit.
Measured: 1,000,000 books (125k authors, 1.25M author links, 900k reviews) in about 4.6 minutes
on 2 cores, PostgreSQL 15 with fsync off.

    python -m services.catalog.seed --books 100000
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import math
import random
import re
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TextIO

import asyncpg

SCHEMA = "book_catalog"
BATCH_ROWS = 50_000
# Books whose vectors and ratings one UPDATE statement sets (a progress step).
UPDATE_CHUNK = 100_000
REVIEW_USERS = 200_000
# ISBN bodies (the 9 digits before the check digit) start here: 978-1-... / 1-..., English.
ISBN_BODY_START = 100_000_000
ISBN_BODY_END = 199_999_999
COVER_BASE = "https://covers.cloudshelf.example"


@dataclass(frozen=True)
class SeedReport:
    """What one run added (reused categories and publishers are not counted)."""

    categories: int
    authors: int
    publishers: int
    books: int
    book_authors: int
    reviews: int
    elapsed_seconds: float


# --------------------------------------------------------------------------------------------
# ISBN check digits


def isbn13_check_digit(first12: str) -> str:
    """The check digit of an ISBN-13 given its first 12 digits."""
    if len(first12) != 12 or not first12.isdigit():
        raise ValueError(f"an ISBN-13 body is 12 digits, got {first12!r}")
    total = sum(int(c) * (3 if i % 2 else 1) for i, c in enumerate(first12))
    return str((10 - total % 10) % 10)


def isbn10_check_digit(first9: str) -> str:
    """The check digit of an ISBN-10 given its first 9 digits ('X' stands for 10)."""
    if len(first9) != 9 or not first9.isdigit():
        raise ValueError(f"an ISBN-10 body is 9 digits, got {first9!r}")
    total = sum(int(c) * (10 - i) for i, c in enumerate(first9))
    check = (11 - total % 11) % 11
    return "X" if check == 10 else str(check)


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
# Word lists

# (top-level genre, fiction?, its subcategories separated by "|")
_TREE: tuple[tuple[str, bool, str], ...] = (
    ("Fiction", True, "Literary Fiction|Historical Fiction|Contemporary Fiction|Short Stories|"
     "Classics|Humorous Fiction"),
    ("Mystery & Thriller", True, "Crime Fiction|Detective Stories|Psychological Thrillers|"
     "Espionage|Cozy Mysteries"),
    ("Science Fiction & Fantasy", True, "Space Opera|Epic Fantasy|Dystopian Fiction|"
     "Urban Fantasy|Cyberpunk|Time Travel|Alternate History"),
    ("Romance", True, "Contemporary Romance|Historical Romance|Romantic Suspense|"
     "Paranormal Romance"),
    ("Science", False, "Physics|Biology|Chemistry|Astronomy|Earth Sciences|Mathematics|"
     "Neuroscience|Ecology"),
    ("History", False, "Ancient History|Medieval History|Modern History|Military History|"
     "World History|History of Science"),
    ("Biography & Memoir", False, "Memoirs|Political Biographies|Artists' Lives|"
     "Sports Biographies"),
    ("Business & Economics", False, "Management|Economics|Entrepreneurship|Personal Finance|"
     "Marketing"),
    ("Computers & Technology", False, "Programming|Databases|Networking|"
     "Artificial Intelligence|Security|Software Engineering|Distributed Systems"),
    ("Arts & Photography", False, "Painting|Photography|Architecture|Music|Design"),
    ("Travel & Food", False, "Travel Guides|Travel Writing|Cookbooks|Wine & Drinks"),
    # Last of the fiction genres: its books are the short ones.
    ("Children & Young Adult", True, "Picture Books|Middle Grade|Young Adult Fantasy|"
     "Coming of Age"),
)  # fmt: skip
CATEGORY_TREE: tuple[tuple[str, bool, tuple[str, ...]], ...] = tuple(
    (name, fiction, tuple(subs.split("|"))) for name, fiction, subs in _TREE
)

FIRST_NAMES = (
    "Aaron Abigail Adam Adrian Agnes Aiden Alan Albert Alexander Alexandra Alice Alicia Amara "
    "Amelia Amir Amy Ana Andrea Andrew Angela Anna Anne Anton Antonio Arthur Astrid Aurora "
    "Barbara Beatrice Ben Benjamin Bernard Beth Bianca Bruno Camila Carla Carlos Caroline Carmen "
    "Catherine Cecilia Charles Charlotte Chen Chloe Christian Christopher Claire Clara Colin "
    "Daniel Daniela David Deborah Diana Diego Dmitri Dominic Dorothy Edward Elena Eleanor Elias "
    "Elif Elizabeth Ella Emil Emily Emma Erik Esther Ethan Eva Evelyn Fatima Felix Fiona Frances "
    "Francesca Frank Freya Gabriel Gabriela George Grace Hannah Hans Harriet Harry Hassan Hazel "
    "Helen Henry Hugo Ian Ines Ingrid Irene Isaac Isabel Ivan Jack Jacob James Jane Javier "
    "Jennifer Jonas Jorge Joseph Julia Julian Karen Karim Kate Katherine Kenji Laura Lea Leo "
    "Leon Lily Linda Lucas Lucia Luis Lydia Madeleine Malik Margaret Maria Marie Mark Marta "
    "Martin Mary Matteo Maya Mei Michael Miguel Mila Miriam Nadia Naomi Nathan Nicholas Nina "
    "Noah Nora Olivia Omar Oscar Patricia Paul Paula Peter Philip Priya Rachel Rafael Rebecca "
    "Richard Robert Rosa Ruth Sakura Samuel Sara Sebastian Simon Sofia Sophie Stella Stephen "
    "Susan Sven Teresa Thomas Tobias Valentina Victor Victoria Vincent Walter William Yara "
    "Yusuf Zoe"
).split()

LAST_NAMES = (
    "Abbott Adams Aguilar Ahmed Alvarez Andersen Anderson Armstrong Ashworth Bailey Baker "
    "Baldwin Banerjee Barnes Bauer Becker Bell Bennett Bergstrom Bishop Blackwood Blake Bloom "
    "Bowen Bradley Brennan Brooks Brown Bryant Burke Byrne Caldwell Cameron Campbell Cardenas "
    "Carlsson Carter Castillo Chambers Chandler Chen Clarke Coleman Collins Conrad Cooper "
    "Costa Crawford Cruz Dalton Davies Delacroix Dixon Donovan Dubois Duncan Durand Eastwood "
    "Edwards Ellis Engel Evans Fairchild Falk Ferguson Fernandez Fischer Fitzgerald Fleming "
    "Fletcher Foster Fournier Fraser Friedman Fuentes Gallagher Garcia Gardner Garrison Gibson "
    "Gonzalez Graham Grant Gray Greene Griffin Gupta Hale Hamilton Hansen Harding Harper "
    "Harrington Hartmann Hayes Henderson Hoffmann Holloway Holmberg Howard Hughes Ibrahim "
    "Ingram Ishikawa Jansen Jensen Johansson Jordan Kaplan Kaur Keller Kennedy Khan Kimura "
    "Klein Knight Kowalski Kruger Lambert Lancaster Larsen Laurent Lawson Lefebvre Lehmann "
    "Lindqvist Lindgren Lopez Lorenz Lowell Lucero Maddox Marchetti Marin Marshall Martinez "
    "Mcallister Mckenzie Mendoza Mercer Meyer Mitchell Molina Montgomery Moreau Morgan Morrison "
    "Murphy Nakamura Navarro Nielsen Novak Nolan Oakley Okafor Olsen Ortega Osborne Owens "
    "Palmer Park Patel Pearson Perez Petersen Pham Pierce Porter Quinn Ramirez Ramos Reed "
    "Reyes Richter Rivera Robinson Rossi Russo Sandoval Santos Sato Schmidt Schneider Schubert "
    "Sharma Shaw Silva Sinclair Singh Sorensen Spencer Stafford Steiner Sterling Stewart Sullivan "
    "Suzuki Sutton Svensson Tanaka Taylor Thornton Torres Tran Turner Underwood Valdez Vance "
    "Vargas Vasquez Vogel Wagner Walker Wallace Warren Watanabe Weber Wells Whitaker Whitfield "
    "Wilkinson Winter Wolff Wright Yamamoto Young Zhang Zimmerman"
).split()

NATIONALITIES = (
    "American",
    "British",
    "Canadian",
    "Irish",
    "Australian",
    "French",
    "German",
    "Spanish",
    "Italian",
    "Swedish",
    "Norwegian",
    "Danish",
    "Dutch",
    "Japanese",
    "Indian",
    "Nigerian",
    "Mexican",
    "Brazilian",
    "Argentine",
    "Polish",
    "Korean",
    "Chinese",
    "South African",
)

ADJECTIVES = (
    "Silent Hidden Broken Golden Silver Crimson Forgotten Lost Distant Quiet Burning Frozen "
    "Wild Dark Bright Last First Secret Invisible Endless Hollow Ancient Restless Scarlet "
    "Northern Southern Eastern Western Midnight Morning Winter Summer Autumn Spring Bitter "
    "Sweet Gentle Fierce Crooked Shattered Painted Wandering Sleeping Drowned Electric Iron "
    "Glass Paper Velvet Stone Salt Copper Amber Emerald Violet Pale Radiant Lonely Fallen "
    "Rising Little Great Long Narrow Deep Strange Curious Impossible Unfinished Borrowed Stolen "
    "Quantum Infinite Hungry Savage Tender Wicked Gilded Empty Open Secondhand Perfect Final"
).split()

NOUNS = (
    "River Garden House Mountain Ocean Forest City Island Bridge Tower Road Harbor Valley Desert "
    "Storm Shadow Light Fire Water Mirror Window Door Key Letter Map Clock Song Voice Dream "
    "Memory Promise Secret Crown Sword Throne Empire Kingdom Republic Revolution War Peace "
    "Winter Summer Night Morning Star Moon Sun Sky Sea Lake Field Orchard Station Train Ship "
    "Lantern Compass Library Museum Archive Atlas Journey Voyage Return Exile Inheritance "
    "Daughter Son Mother Father Sister Brother Stranger Witness Thief Spy Detective Doctor "
    "Gardener Painter Astronomer Cartographer Orphan Widow Queen King Prince Soldier Pilgrim "
    "Glass Salt Iron Silk Paper Bone Ash Dust Snow Rain Wind Thunder Tide Wave Horizon Border "
    "Frontier Machine Engine Signal Code Algorithm Network Circuit Atom Cell Gene Planet Galaxy "
    "Comet Orbit Equation Theory Experiment Silence Echo Whisper Fever Hunger Harvest Feast "
    "Wedding Funeral Festival Carnival Market Kitchen Table Bread Wine Honey Coffee Tea Sugar"
).split()

PLACES = (
    "Venice Paris London Kyoto Lisbon Prague Vienna Cairo Istanbul Havana Berlin Dublin Oslo "
    "Marrakesh Tangier Alexandria Samarkand Patagonia Provence Tuscany Andalusia Bengal "
    "Siberia Manhattan Brooklyn Chicago Montreal Edinburgh Cornwall Yorkshire Normandy "
    "Bavaria Sicily Crete Athens Rome Babylon Troy Carthage Byzantium Atlantis Avalon Arcadia"
).split()

# Nonfiction subjects, and the words their titles and descriptions are built from.
TOPICS = (
    "Time Light Gravity Energy Matter Money Power Memory Language Numbers Infinity Chaos "
    "Evolution Genes Cells Oceans Climate Weather Forests Rivers Mountains Cities Empires "
    "Trade Silk Salt Spices Sugar Coffee Bread Wine Maps Ships Railways Clocks Glass Iron Steel "
    "Paper Printing Medicine Plagues Vaccines Surgery Sleep Dreams Music Painting Photography "
    "Architecture Gardens Design Cooking Leadership Strategy Markets Banking Inflation Startups "
    "Negotiation Habits Happiness Creativity Attention Algorithms Databases Networks Compilers "
    "Cryptography Robots Computers Software Data Intelligence Statistics Probability Geometry "
    "Calculus Stars Planets Galaxies Atoms Quarks Chemistry Volcanoes Earthquakes Ice Deserts"
).split()

FICTION_TITLES = (
    "The {adj} {noun}",
    "The {adj} {noun}",
    "The {noun} of {place}",
    "A {noun} in {place}",
    "The {noun}'s {noun2}",
    "{adj} {noun}",
    "The Last {noun} of {place}",
    "{noun} and {noun2}",
    "The {noun} at the Edge of the {noun2}",
    "Where the {noun} Sleeps",
    "Daughter of the {adj} {noun}",
    "The {adj} {noun} of {place}",
    "Beneath the {adj} {noun}",
    "A {noun} of {noun2} and {noun3}",
)

NONFICTION_TITLES = (
    "A History of {topic}",
    "A Brief History of {topic}",
    "The Science of {topic}",
    "Understanding {topic}",
    "On {topic}",
    "The Age of {topic}",
    "{topic} and {topic2}",
    "The {adj} History of {topic}",
    "How {topic} Made the Modern World",
    "The Secret Life of {topic}",
    "{topic}: A Practical Guide",
    "The Little Book of {topic}",
    "Thinking About {topic}",
    "The Hidden World of {topic}",
)

SUBTITLES = (
    "A Novel",
    "A Novel",
    "Stories",
    "A Memoir",
    "A Journey Through {topic} and {topic2}",
    "The Untold Story of {topic}",
    "How {topic} Shaped Our World",
    "Lessons from {place}",
    "An Introduction",
    "A Field Guide",
    "Book {n} of the {adj} {noun} Trilogy",
    "The {adj} Years",
    "Essays on {topic} and {topic2}",
)

FICTION_SENTENCES = (
    "A {adj2} story of {noun_l} and {noun2_l}, set in {place}.",
    "When a {person} discovers a {adj2} {noun_l}, nothing in {place} stays the same.",
    "In this {adj2} novel, a {person} returns to {place} to face the {noun_l} of the past.",
    "A {adj2} tale of {topic_l}, loss and the {noun_l} we keep.",
    "Between the {noun_l} and the {noun2_l}, a {person} must choose what to save.",
    "Told in {adj2} prose, it follows a {person} across {place} and beyond.",
    "Nothing is what it seems in this {adj2} story of {topic_l} and betrayal.",
    "A family, a {noun_l} and a {adj2} secret that spans three generations.",
)

NONFICTION_SENTENCES = (
    "A {adj2} account of how {topic_l} changed the way we live.",
    "From {place} to the present day, this book traces the story of {topic_l}.",
    "Drawing on new research, the author explains {topic_l} and {topic2_l} for every reader.",
    "An accessible, {adj2} introduction to {topic_l}.",
    "Part history, part science, it shows why {topic_l} matters more than ever.",
    "A {adj2} guide to {topic_l}, with practical lessons on {topic2_l}.",
    "The surprising story of {topic_l}, told through the lives of the people who shaped it.",
    "Essential reading on {topic_l}, {topic2_l} and the {noun_l} that connects them.",
)

DESCRIPTION_ADJECTIVES = (
    "gripping",
    "luminous",
    "haunting",
    "sweeping",
    "witty",
    "tender",
    "brilliant",
    "unforgettable",
    "lyrical",
    "powerful",
    "fascinating",
    "dark",
    "thoughtful",
    "vivid",
    "compelling",
    "ambitious",
    "moving",
    "clear",
    "lively",
    "definitive",
)

PERSONS = (
    "young woman",
    "retired detective",
    "grieving widow",
    "young scientist",
    "reluctant heir",
    "disgraced journalist",
    "ship's doctor",
    "lonely cartographer",
    "former soldier",
    "street musician",
    "village teacher",
    "museum curator",
    "runaway prince",
    "junior lawyer",
)

PUBLISHER_PATTERNS = (
    "{adj} {noun} Press",
    "{last} & {last2}",
    "{noun} House",
    "{last} Books",
    "{place} University Press",
    "{adj} {noun} Publishing",
    "{noun}light Editions",
    "{last}, {last2} & Sons",
    "The {noun} Press",
    "{place} Books",
    "{adj} Harbor Publishers",
    "{last} Publishing Group",
)

REVIEW_TITLES: dict[int, tuple[str, ...]] = {
    1: ("Not for me", "Disappointing", "Could not finish it", "A waste of time"),
    2: ("Uneven", "Had high hopes", "Slow going", "Some good ideas, poorly done"),
    3: ("Decent read", "Good, not great", "Worth a look", "Mixed feelings"),
    4: ("Really enjoyed it", "Very good", "Recommended", "A solid read"),
    5: ("Loved it!", "A masterpiece", "Could not put it down", "Five stars", "Brilliant"),
}

REVIEW_CONTENT: dict[int, tuple[str, ...]] = {
    1: (
        "The premise was promising but the execution fell flat.",
        "I found it hard to care about any of it.",
    ),
    2: (
        "A few strong chapters, but it drags in the middle.",
        "The writing is fine; the story did not hold my attention.",
    ),
    3: (
        "Enjoyable enough, though I expected more from the ending.",
        "Some parts are excellent, others feel rushed.",
    ),
    4: (
        "Well written and thoughtful. I would read more by this author.",
        "Engaging from start to finish, with a couple of slow patches.",
    ),
    5: (
        "One of the best books I have read this year.",
        "Beautifully written, I recommended it to all my friends.",
        "I read it in one sitting and will read it again.",
    ),
}

LANGUAGES = ("en",) * 17 + ("fr", "de", "es")
FORMATS = ("paperback",) * 5 + ("hardcover",) * 3 + ("ebook",) * 3 + ("audiobook",)
RATINGS = (1,) * 5 + (2,) * 8 + (3,) * 17 + (4,) * 35 + (5,) * 35
REVIEW_STATUSES = ("published",) * 90 + ("pending",) * 7 + ("rejected",) * 3
BOOK_STATUSES = ("active",) * 194 + ("inactive",) * 3 + ("discontinued",) * 3
PRICE_ENDINGS = (99, 99, 99, 95, 49, 0)
MIN_PRICE_CENTS = 299
MAX_PRICE_CENTS = 8999

_SLUG_STRIP = re.compile(r"[^a-z0-9]+")


def slugify(text: str) -> str:
    return _SLUG_STRIP.sub("-", text.lower()).strip("-")


# --------------------------------------------------------------------------------------------
# Progress


class Progress:
    """A one-line progress bar on stderr (a line per 10% when stderr is not a terminal)."""

    def __init__(self, label: str, total: int, *, enabled: bool, out: TextIO = sys.stderr):
        self.label = label
        self.total = max(total, 1)
        self.enabled = enabled
        self.out = out
        self.tty = out.isatty()
        self.started = time.monotonic()
        self.last_decile = -1
        self.done = 0

    def advance(self, count: int) -> None:
        self.done += count
        if not self.enabled:
            return
        fraction = min(self.done / self.total, 1.0)
        elapsed = time.monotonic() - self.started
        if self.tty:
            filled = int(fraction * 30)
            bar = "#" * filled + "." * (30 - filled)
            self.out.write(
                f"\r{self.label:<10} [{bar}] {fraction:4.0%} {self.done:,}/{self.total:,}"
                f" {elapsed:6.1f}s"
            )
            if self.done >= self.total:
                self.out.write("\n")
            self.out.flush()
        else:
            decile = int(fraction * 10)
            if decile > self.last_decile:
                self.last_decile = decile
                self.out.write(
                    f"{self.label}: {fraction:.0%} ({self.done:,}/{self.total:,}, {elapsed:.1f}s)\n"
                )
                self.out.flush()

    def note(self, message: str) -> None:
        if self.enabled:
            self.out.write(message + "\n")
            self.out.flush()


# --------------------------------------------------------------------------------------------
# Row generation


@dataclass(frozen=True)
class _World:
    """What the books refer to: ids in the database."""

    fiction_categories: Sequence[int]
    nonfiction_categories: Sequence[int]
    publisher_ids: Sequence[int]
    author_ids: Sequence[int]


@dataclass
class _Batch:
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
    world: _World,
    *,
    books: int,
    first_book_id: int,
    first_isbn_body: int,
    first_review_id: int,
    batch_rows: int = BATCH_ROWS,
) -> Iterator[_Batch]:
    """The rows of `books` new books, in batches of at most `batch_rows` books.

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
    batch = _Batch([], [], [])
    for book_id in range(first_book_id, first_book_id + books):
        isbn13, isbn10 = next(isbns)
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
                description += " " + sentences[(first + 2 * step) % n_sentences].format_map(fill)

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
                dates[int(days * (1.0 - rand() ** 2.5))],
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
            batch = _Batch([], [], [])
    if batch.books:
        yield batch


def _publisher_names(rng: random.Random, count: int) -> list[str]:
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


def _author_rows(rng: random.Random, first_id: int, count: int) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    earliest = dt.date(1900, 1, 1).toordinal()
    span = dt.date(2000, 12, 31).toordinal() - earliest
    for i in range(count):
        first = rng.choice(FIRST_NAMES)
        last = rng.choice(LAST_NAMES)
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


# --------------------------------------------------------------------------------------------
# Database


async def _ensure_categories(conn: asyncpg.Connection) -> tuple[int, list[int], list[int]]:
    """Creates the missing part of the tree; returns (created, fiction ids, nonfiction ids)."""
    tops = [(name, slugify(name), f"Books in {name}.") for name, _, _ in CATEGORY_TREE]
    subs = [
        (sub, slugify(sub), f"{sub} ({name}).", slugify(name))
        for name, _, children in CATEGORY_TREE
        for sub in children
    ]
    created = await conn.fetch(
        f"""
        INSERT INTO {SCHEMA}.categories (name, slug, description)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
        ON CONFLICT DO NOTHING RETURNING id
        """,
        *[list(column) for column in zip(*tops, strict=True)],
    )
    created += await conn.fetch(
        f"""
        INSERT INTO {SCHEMA}.categories (name, slug, description, parent_category_id)
        SELECT u.name, u.slug, u.description, p.id
          FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
               AS u(name, slug, description, parent_slug)
          JOIN {SCHEMA}.categories p ON p.slug = u.parent_slug
        ON CONFLICT DO NOTHING RETURNING id
        """,
        *[list(column) for column in zip(*subs, strict=True)],
    )
    rows = await conn.fetch(
        f"SELECT id, name, slug FROM {SCHEMA}.categories WHERE name = ANY($1) OR slug = ANY($2)",
        [s[0] for s in subs],
        [s[1] for s in subs],
    )
    by_name = {r["name"]: r["id"] for r in rows}
    by_slug = {r["slug"]: r["id"] for r in rows}
    fiction: list[int] = []
    nonfiction: list[int] = []
    for _name, is_fiction, children in CATEGORY_TREE:
        for sub in children:
            category_id = by_slug.get(slugify(sub), by_name.get(sub))
            if category_id is not None:
                (fiction if is_fiction else nonfiction).append(category_id)
    if not fiction or not nonfiction:
        raise RuntimeError("the category tree could not be created")
    return len(created), fiction, nonfiction


async def _ensure_publishers(conn: asyncpg.Connection, names: list[str]) -> tuple[int, list[int]]:
    rng = random.Random(len(names))
    rows = [
        (
            name,
            f"{name} publishes fiction and nonfiction.",
            f"https://www.{slugify(name)}.example.com",
            rng.choice(NATIONALITIES),
            rng.randint(1820, 2020),
        )
        for name in names
    ]
    created = await conn.fetch(
        f"""
        INSERT INTO {SCHEMA}.publishers (name, description, website_url, country, established_year)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[])
        ON CONFLICT DO NOTHING RETURNING id
        """,
        *[list(column) for column in zip(*rows, strict=True)],
    )
    ids = await conn.fetch(
        f"SELECT id FROM {SCHEMA}.publishers WHERE name = ANY($1) ORDER BY id", names
    )
    return len(created), [r["id"] for r in ids]


async def _next_id(conn: asyncpg.Connection, table: str) -> int:
    """The first free id: after the table's rows and after what its sequence handed out."""
    value = await conn.fetchval(
        f"""
        SELECT greatest(
            (SELECT coalesce(max(id), 0) FROM {SCHEMA}.{table}),
            (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END
               FROM {SCHEMA}.{table}_id_seq)
        ) + 1
        """
    )
    return int(value)


async def _first_isbn_body(conn: asyncpg.Connection) -> int:
    """The first 9-digit ISBN body after the ones already used in our range."""
    last13 = await conn.fetchval(
        f"""
        SELECT isbn_13 FROM {SCHEMA}.books
         WHERE isbn_13 >= ('978' || $1::text) AND isbn_13 <= ('978' || $2::text || '9')
         ORDER BY isbn_13 DESC LIMIT 1
        """,
        str(ISBN_BODY_START),
        str(ISBN_BODY_END),
    )
    last10 = await conn.fetchval(
        f"""
        SELECT isbn_10 FROM {SCHEMA}.books
         WHERE isbn_10 >= $1::text AND isbn_10 <= ($2::text || 'X')
         ORDER BY isbn_10 DESC LIMIT 1
        """,
        str(ISBN_BODY_START),
        str(ISBN_BODY_END),
    )
    body = ISBN_BODY_START
    if last13 is not None and last13[3:12].isdigit():
        body = max(body, int(last13[3:12]) + 1)
    if last10 is not None and last10[:9].isdigit():
        body = max(body, int(last10[:9]) + 1)
    return body


async def _set_sequence(conn: asyncpg.Connection, table: str) -> None:
    await conn.execute(
        f"""
        SELECT setval('{SCHEMA}.{table}_id_seq', m)
          FROM (SELECT max(id) AS m FROM {SCHEMA}.{table}) x
         WHERE m >= (SELECT last_value FROM {SCHEMA}.{table}_id_seq)
        """
    )


# The triggers' expressions, set-based over a range of new book ids: the vector of
# books_before_write / book_authors_changed and the aggregates of reviews_changed.
_FINISH_BOOKS = f"""
UPDATE {SCHEMA}.books b
   SET search_vector = {SCHEMA}.book_document(b.id, b.title, b.subtitle, b.description),
       rating_count = coalesce(s.n, 0),
       rating_average = coalesce(round(s.avg_rating, 2), 0)
  FROM (SELECT g.id, r.n, r.avg_rating
          FROM generate_series($1::int, $2::int) AS g(id)
          LEFT JOIN (SELECT book_id, count(*) AS n, avg(rating) AS avg_rating
                       FROM {SCHEMA}.reviews
                      WHERE book_id BETWEEN $1 AND $2 AND status = 'published'
                      GROUP BY book_id) r ON r.book_id = g.id) s
 WHERE b.id = s.id AND b.id BETWEEN $1 AND $2
"""

_TRIGGER_TABLES = ("books", "book_authors", "reviews")
# A run at least this large, and at least as large as the catalog, drops the plain indexes of
# books (the GIN index above all) and builds them again after the load: building a GIN index
# over a million vectors takes seconds, maintaining it row by row minutes.
BULK_BOOKS = 100_000


async def _drop_plain_book_indexes(conn: asyncpg.Connection) -> list[str]:
    """Drops the indexes of books that back no constraint; returns their definitions."""
    rows = await conn.fetch(
        f"""
        SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition
          FROM pg_index i
         WHERE i.indrelid = '{SCHEMA}.books'::regclass
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
         ORDER BY 1
        """
    )
    for row in rows:
        await conn.execute(f"DROP INDEX {row['name']}")
    return [row["definition"] for row in rows]


async def seed_catalog(
    dsn: str, books: int, *, seed: int = 42, progress: bool = True
) -> SeedReport:
    """Adds `books` books (with authors, publishers, categories and reviews) to the catalog."""
    if books < 0:
        raise ValueError("books must be >= 0")
    started = time.monotonic()
    rng = random.Random(seed)
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        # A large work_mem lets the GIN index absorb the new vectors in big merges.
        await conn.execute("SET work_mem = '256MB'; SET maintenance_work_mem = '512MB'")
        async with conn.transaction():
            # Writers of these tables wait until the commit; readers do not.
            await conn.execute(
                f"LOCK TABLE {SCHEMA}.authors, {SCHEMA}.books, {SCHEMA}.book_authors, "
                f"{SCHEMA}.reviews IN SHARE ROW EXCLUSIVE MODE"
            )
            categories, fiction, nonfiction = await _ensure_categories(conn)
            publishers, publisher_ids = await _ensure_publishers(
                conn, _publisher_names(random.Random(seed), 200)
            )

            n_authors = max(20, books // 8)
            first_author = await _next_id(conn, "authors")
            author_rows = _author_rows(rng, first_author, n_authors)
            await conn.copy_records_to_table(
                "authors", schema_name=SCHEMA, columns=AUTHOR_COLUMNS, records=author_rows
            )
            del author_rows
            await _set_sequence(conn, "authors")
            world = _World(
                fiction, nonfiction, publisher_ids, range(first_author, first_author + n_authors)
            )

            for table in _TRIGGER_TABLES:
                await conn.execute(f"ALTER TABLE {SCHEMA}.{table} DISABLE TRIGGER USER")

            bulk = books >= BULK_BOOKS and books >= await conn.fetchval(
                f"SELECT count(*) FROM {SCHEMA}.books"
            )
            dropped_indexes = await _drop_plain_book_indexes(conn) if bulk else []

            first_book = await _next_id(conn, "books")
            first_review = await _next_id(conn, "reviews")
            bar = Progress("books", books, enabled=progress)
            n_links = n_reviews = 0
            batches = generate_batches(
                rng,
                world,
                books=books,
                first_book_id=first_book,
                first_isbn_body=await _first_isbn_body(conn),
                first_review_id=first_review,
            )
            # The next batch is generated in a thread while PostgreSQL ingests this one.
            upcoming = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
            try:
                while (batch := await upcoming) is not None:
                    upcoming = asyncio.ensure_future(asyncio.to_thread(next, batches, None))
                    await conn.copy_records_to_table(
                        "books", schema_name=SCHEMA, columns=BOOK_COLUMNS, records=batch.books
                    )
                    await conn.copy_records_to_table(
                        "book_authors",
                        schema_name=SCHEMA,
                        columns=BOOK_AUTHOR_COLUMNS,
                        records=batch.book_authors,
                    )
                    if batch.reviews:
                        await conn.copy_records_to_table(
                            "reviews",
                            schema_name=SCHEMA,
                            columns=REVIEW_COLUMNS,
                            records=batch.reviews,
                        )
                    n_links += len(batch.book_authors)
                    n_reviews += len(batch.reviews)
                    bar.advance(len(batch.books))
            finally:
                upcoming.cancel()
            await _set_sequence(conn, "books")
            await _set_sequence(conn, "reviews")

            # Statistics first: without them book_document's author lookup is planned for an
            # empty book_authors (a hash join over all authors per book, 5x slower).
            for table in ("authors", *_TRIGGER_TABLES):
                await conn.execute(f"ANALYZE {SCHEMA}.{table}")
            bar = Progress("indexing", books, enabled=progress)
            last_book = first_book + books - 1
            for low in range(first_book, last_book + 1, UPDATE_CHUNK):
                high = min(low + UPDATE_CHUNK - 1, last_book)
                await conn.execute(_FINISH_BOOKS, low, high)
                bar.advance(high - low + 1)

            if dropped_indexes:
                bar.note(f"building {len(dropped_indexes)} indexes of books")
                for definition in dropped_indexes:
                    await conn.execute(definition)
            for table in _TRIGGER_TABLES:
                await conn.execute(f"ALTER TABLE {SCHEMA}.{table} ENABLE TRIGGER USER")

        if bulk:
            # The UPDATE above wrote every book twice: the first versions, dead now, would
            # take up half the table and every sequential scan would read them. Rewritten
            # compact after the commit (inside the transaction they still count as live).
            bar.note("compacting books")
            await conn.execute(f"VACUUM FULL {SCHEMA}.books")
        bar.note("analyzing")
        for table in ("categories", "publishers", "authors", *_TRIGGER_TABLES):
            await conn.execute(f"ANALYZE {SCHEMA}.{table}")
    finally:
        await conn.close()

    return SeedReport(
        categories=categories,
        authors=n_authors,
        publishers=publishers,
        books=books,
        book_authors=n_links,
        reviews=n_reviews,
        elapsed_seconds=time.monotonic() - started,
    )


def main() -> None:
    from cloudshelf.runtime.config import Settings

    parser = argparse.ArgumentParser(description="Adds demo books to the catalog database.")
    parser.add_argument(
        "--dsn",
        default=None,
        help="PostgreSQL DSN of the catalog (default: CLOUDSHELF_POSTGRES_DSN or the local stack)",
    )
    parser.add_argument("--books", type=int, default=1000, help="books to add (default 1000)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    args = parser.parse_args()
    dsn = args.dsn or Settings.from_env("catalog").postgres_dsn
    report = asyncio.run(seed_catalog(dsn, args.books, seed=args.seed, progress=not args.quiet))
    print(
        f"added {report.books:,} books, {report.authors:,} authors, {report.book_authors:,} "
        f"author links, {report.reviews:,} reviews, {report.publishers} publishers, "
        f"{report.categories} categories in {report.elapsed_seconds:.1f}s"
    )


if __name__ == "__main__":
    main()
