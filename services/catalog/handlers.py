"""CatalogService handlers: validation, cache and stores put together per RPC."""

from __future__ import annotations

import asyncio
import json
from dataclasses import astuple, dataclass, replace

import asyncpg

from cloudshelf.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from cloudshelf.runtime.auth import Role, signed_in_caller
from cloudshelf.runtime.errors import InvalidArgument, NotFound
from cloudshelf.runtime.events import OutboxRelay
from cloudshelf.runtime.idempotency import IdempotentCall
from cloudshelf.runtime.paging import Int, Text, decode_page_token, encode_page_token, split_page
from cloudshelf.runtime.rpc import ServicerContext
from cloudshelf.runtime.validation import check_text
from services.catalog.books import BookStore, author_links, columns_for_create, columns_for_update
from services.catalog.cache import SEARCH_POPULAR, SEARCH_RATING, CatalogCache
from services.catalog.facets import counted_facets, scaled_to_total, search_facets
from services.catalog.invalidations import CacheInvalidations
from services.catalog.popular import popular_books
from services.catalog.reviews import ReviewStore
from services.catalog.search import (
    SORTS,
    BookSearch,
    QueryWords,
    SearchFilters,
    SearchPage,
    Total,
    exact_total_max_from_env,
)
from services.catalog.spelling import correct, may_be_misspelt
from services.catalog.suggest import (
    DEFAULT_LIMIT,
    KINDS,
    MAX_LIMIT,
    MAX_PREFIX_CHARS,
    MAX_PREFIX_WORDS,
    SuggestQuery,
    suggest,
)
from services.catalog.taxonomy import TaxonomyStore
from services.catalog.validation import (
    FORMATS,
    MAX_ID,
    MAX_INT32,
    MAX_PAGE_SIZE,
    check_enum,
    check_isbn10,
    check_isbn13,
    check_language,
    check_lookup_id,
    check_slug,
    money_to_decimal,
    page_size,
    refuse_output_only_book_fields,
)

MAX_BATCH = 1000
# The scope of AdjustInventory's request_id keys (plus the caller's principal, once known).
ADJUST_INVENTORY = "/cloudshelf.catalog.v1.CatalogService/AdjustInventory"
# Deeper pages are refused: a query that needs them should be narrowed instead.
MAX_SEARCH_OFFSET = 10_000
# A category subtree a search used is kept in process this long, for its generation.
SUBTREE_LOCAL_TTL = 600.0


class CatalogHandlers(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(
        self,
        pool: asyncpg.Pool,
        cache: CatalogCache,
        relay: OutboxRelay | None = None,
        invalidations: CacheInvalidations | None = None,
        *,
        generic_pool: asyncpg.Pool | None = None,
    ) -> None:
        self.pool = pool
        self.books = BookStore(pool)
        self.taxonomy = TaxonomyStore(pool)
        self.reviews = ReviewStore(pool)
        self.search = BookSearch(
            pool, generic_pool=generic_pool, exact_total_max=exact_total_max_from_env()
        )
        self.cache = cache
        self.relay = relay
        self.invalidations = invalidations or CacheInvalidations(pool, cache)

    def _events_written(self) -> None:
        if self.relay is not None:
            self.relay.wake()

    async def _cache_written(self) -> None:
        """After a committed write: its cache invalidations (rows its transaction left in
        cache_invalidations) go to Redis now, so the writer reads its own write."""
        await self.invalidations.apply_latest()

    async def _book_by_id(self, book_id: int) -> catalog_pb2.GetBookResponse:
        """A Book by id through the cache (one database load per key under a stampede).
        A cache hit is parsed once, straight into the response."""
        data, views = await self.cache.get_book(book_id)
        if data is None:

            async def load() -> bytes:
                book, version = await self.books.get_versioned("id", book_id)
                loaded = book.SerializeToString()
                await self.cache.put_book(book_id, version, loaded)
                return loaded

            data = await self.cache.single_flight(f"book:{book_id}", load)
        return _book_response(data, views)

    async def _book_by_slug(self, slug: str) -> catalog_pb2.GetBookResponse:
        """A Book by slug through the cache: slug -> id, then the book by id. The mapping
        is checked against the book, so a slug that moved to another book is never served."""
        book_id = await self.cache.get_slug(slug)
        if book_id is not None:
            try:
                response = await self._book_by_id(book_id)
                if response.book.slug == slug:
                    return response
            except NotFound:
                pass
            await self.cache.forget_slug(slug)

        async def load() -> bytes:
            book, version = await self.books.get_versioned("slug", slug)
            loaded = book.SerializeToString()
            await self.cache.put_book(book.id, version, loaded)
            await self.cache.put_slug(slug, book.id)
            return loaded

        return _book_response(await self.cache.single_flight(f"slug:{slug}", load), None)

    async def _subtree(self, category_id: int) -> list[int]:
        """A category and all its descendants (cached: 2 h, or until a category changes)."""
        key = await self.cache.category_key(f"subtree:{category_id}")
        cached = await self.cache.get_category(key)
        if cached is not None:
            return list(json.loads(cached))
        ids = await self.taxonomy.category_and_descendants(category_id)
        await self.cache.put_category(key, json.dumps(ids).encode())
        return ids

    # --- books ---------------------------------------------------------------------------

    async def CreateBook(
        self, request: catalog_pb2.CreateBookRequest, context: ServicerContext
    ) -> catalog_pb2.CreateBookResponse:
        refuse_output_only_book_fields(request.book)
        columns = columns_for_create(request.book)
        book_id = await self.books.create(columns, author_links(request.book))
        self._events_written()
        await self._cache_written()
        return catalog_pb2.CreateBookResponse(book=await self.books.get("id", book_id))

    async def UpdateBook(
        self, request: catalog_pb2.UpdateBookRequest, context: ServicerContext
    ) -> catalog_pb2.UpdateBookResponse:
        book_id = check_lookup_id("book.id", request.book.id, "book")
        paths = list(request.update_mask.paths)
        columns = columns_for_update(request.book, paths)
        links = author_links(request.book) if "authors" in paths else None
        changed = await self.books.update(book_id, columns, links)
        if changed:
            self._events_written()
            await self._cache_written()
        return catalog_pb2.UpdateBookResponse(book=await self.books.get("id", book_id))

    async def GetBook(
        self, request: catalog_pb2.GetBookRequest, context: ServicerContext
    ) -> catalog_pb2.GetBookResponse:
        match request.WhichOneof("key"):
            case "id":
                return await self._book_by_id(check_lookup_id("id", request.id, "book"))
            case "isbn_13":
                book = await self.books.get("isbn_13", check_isbn13("isbn_13", request.isbn_13))
            case "isbn_10":
                book = await self.books.get("isbn_10", check_isbn10("isbn_10", request.isbn_10))
            case "slug":
                return await self._book_by_slug(check_slug("slug", request.slug))
            case _:
                raise InvalidArgument("key", "set one of id, isbn_13, isbn_10 or slug")
        return catalog_pb2.GetBookResponse(book=book)

    async def BatchGetBooks(
        self, request: catalog_pb2.BatchGetBooksRequest, context: ServicerContext
    ) -> catalog_pb2.BatchGetBooksResponse:
        if len(request.ids) > MAX_BATCH:
            raise InvalidArgument("ids", f"at most {MAX_BATCH} ids per call")
        ids = list(dict.fromkeys(_positive(f"ids[{i}]", v) for i, v in enumerate(request.ids)))
        # Ids above what the store holds are unknown ids like any other: listed missing.
        stored_ids = [i for i in ids if i <= MAX_ID]
        found, views = await self.cache.get_books(stored_ids)
        misses = [i for i in stored_ids if i not in found]
        if misses:
            loaded = {
                i: (version, book.SerializeToString())
                for i, (book, version) in (await self.books.get_many_versioned(misses)).items()
            }
            await self.cache.put_books(loaded)
            found.update((i, data) for i, (_, data) in loaded.items())
        response = catalog_pb2.BatchGetBooksResponse(missing_ids=[i for i in ids if i not in found])
        for book_id in ids:
            if book_id in found:
                book = response.books.add()
                book.MergeFromString(found[book_id])
                _raise_view_count(book, views.get(book_id))
        return response

    async def ListBooks(
        self, request: catalog_pb2.ListBooksRequest, context: ServicerContext
    ) -> catalog_pb2.ListBooksResponse:
        size = page_size(request.page_size)
        query: dict[str, object] = {"category": request.category_id, "size": size}
        if request.include_inactive:  # tokens of the default listing keep their shape
            query["inactive"] = True
        position = decode_page_token(request.page_token, query, {"after": Int()}) or {"after": 0}
        categories = None
        if request.category_id:
            categories = await self._subtree(_category("category_id", request.category_id))
        fetched = await self.books.list_in_categories(
            categories, int(position["after"]), size + 1, active_only=not request.include_inactive
        )
        books, token = split_page(fetched, size, lambda b: {"after": b.id}, query)
        return catalog_pb2.ListBooksResponse(books=books, next_page_token=token)

    async def SearchBooks(
        self, request: catalog_pb2.SearchBooksRequest, context: ServicerContext
    ) -> catalog_pb2.SearchBooksResponse:
        filters, sort, size = _search_request(request)
        query = {
            "filters": filters.cache_key(),
            "category": request.category_id,
            "sort": sort,
            "size": size,
        }
        # Searched as typed, its pages and total differ from the corrected ones.
        exact = {"exact": True} if request.exact_query else {}
        query.update(exact)
        # Tokens stop at MAX_SEARCH_OFFSET: deeper pages are not served (narrow the query).
        shape = {"offset": Int(0, MAX_SEARCH_OFFSET)}
        offset = int(
            (decode_page_token(request.page_token, query, shape) or {"offset": 0})["offset"]
        )
        words = await self.search.words(filters.text)

        # A page is cached under the search generation, and under its sort's own one when
        # a narrower write can reorder it: reviews the rating sort, purchases the best
        # sellers (relevance without search words). So pages 1 and 2 always come from the
        # same generation, and a purchase does not end every cached search. The total is
        # cached apart, once per query and filters, whatever the sort or the page.
        sort_generation = None
        if sort == "rating":
            sort_generation = SEARCH_RATING
        elif sort == "relevance" and not words.searchable:
            sort_generation = SEARCH_POPULAR
        # A faceted page is cached apart; the page token does not bind include_facets, so a
        # client may ask for facets on the first page only.
        shown = {"offset": offset, **({"facets": True} if request.include_facets else {})}
        lookup = await self.cache.search_lookup(
            json.dumps({**query, **shown}),
            json.dumps({"total": filters.cache_key(), "category": request.category_id, **exact}),
            sort_generation,
            category=bool(request.category_id),
        )
        if lookup.page is not None:
            return catalog_pb2.SearchBooksResponse.FromString(lookup.page)

        async def load() -> catalog_pb2.SearchBooksResponse:
            scoped = filters
            if request.category_id:
                subtree = await self._search_subtree(
                    _category("category_id", request.category_id), lookup.category_generation
                )
                scoped = replace(filters, category_ids=tuple(subtree))
            # Typo tolerance (services/catalog/spelling.py): decided once per query and
            # filters for a catalog generation, and cached with the total, so later pages
            # search the same words without deciding again.
            known = _cached_total(lookup.total)
            corrected = known.corrected if known is not None else None
            searched = words
            if corrected is not None:
                scoped = replace(scoped, text=corrected)
                searched = await self.search.words(corrected)
            known_total = known.total if known is not None else None
            found, facets = await self._search(
                scoped, searched, sort, offset, size + 1, known_total, request.include_facets
            )
            # Most searches match too many books for a word of theirs to be a typo: the
            # spelling lookup is made only for those that might be.
            if (
                known is None
                and not request.exact_query
                and found.total is not None
                and may_be_misspelt(scoped.text, found.total.count)
            ):
                corrected = await correct(self.pool, scoped.text)
                if corrected is not None:
                    scoped = replace(scoped, text=corrected)
                    searched = await self.search.words(corrected)
                    found, facets = await self._search(
                        scoped, searched, sort, offset, size + 1, None, request.include_facets
                    )
            total = found.total or known_total
            assert total is not None
            more = len(found.books) > size
            response = catalog_pb2.SearchBooksResponse(
                books=found.books[:size],
                total_count=total.count,
                total_count_is_estimate=total.estimate,
            )
            if facets is not None:
                response.facets.CopyFrom(scaled_to_total(facets, total.count))
            if corrected is not None:
                response.corrected_query = corrected
            if more and offset + size <= MAX_SEARCH_OFFSET:
                response.next_page_token = encode_page_token({"offset": offset + size}, query)
            counted = (
                None
                if found.total is None
                else json.dumps([*astuple(found.total), corrected]).encode()
            )
            # Stored after the answer leaves: the caller does not wait for Redis.
            self.cache.put_search_later(lookup, response.SerializeToString(), counted)
            return response

        # Concurrent identical searches share one query (and one response, never changed).
        if lookup.cacheable:
            return await self.cache.single_flight(lookup.flight_key, load)
        return await load()

    async def _search(
        self,
        filters: SearchFilters,
        words: QueryWords,
        sort: str,
        offset: int,
        limit: int,
        known_total: Total | None,
        include_facets: bool,
    ) -> tuple[SearchPage, catalog_pb2.SearchFacets | None]:
        """A page of a search and, when asked, its facets: counted from the same matches
        when they are few, else by a statement of their own on a second connection."""
        if include_facets and self.search.reads_matches_once(words, known_total):
            found = await self.search.search(
                filters, words, sort, offset, limit, known_total=known_total, facets=True
            )
            if found.facet_rows is not None:
                return found, counted_facets(found.facet_rows)
            # More matches than the planner thought: counted apart.
            return found, await search_facets(self.pool, filters, words.searchable)
        searching = self.search.search(filters, words, sort, offset, limit, known_total=known_total)
        if not include_facets:
            return await searching, None
        found, facets = await asyncio.gather(
            searching, search_facets(self.pool, filters, words.searchable)
        )
        return found, facets

    async def _search_subtree(self, category_id: int, generation: int | None) -> list[int]:
        """A category's subtree for a search: kept in process for the category generation
        the search's lookup read (no round trip), else through the cache."""
        if generation is None:
            return await self._subtree(category_id)
        key = f"subtree:{category_id}:{generation}"
        known = self.cache.get_local(key)
        if isinstance(known, list):
            return known
        ids = await self._subtree(category_id)
        self.cache.put_local(key, ids, SUBTREE_LOCAL_TTL)
        return ids

    async def SuggestBooks(
        self, request: catalog_pb2.SuggestBooksRequest, context: ServicerContext
    ) -> catalog_pb2.SuggestBooksResponse:
        words = check_text("prefix", request.prefix, max_length=MAX_PREFIX_CHARS).split()
        if not any(ch.isalnum() for word in words for ch in word):
            raise InvalidArgument("prefix", "give at least one letter or digit")
        if len(words) > MAX_PREFIX_WORDS:
            raise InvalidArgument("prefix", f"at most {MAX_PREFIX_WORDS} words")
        if not 0 <= request.limit <= MAX_LIMIT:
            raise InvalidArgument("limit", f"must be between 1 and {MAX_LIMIT}")
        if len(request.kinds) > len(KINDS):
            raise InvalidArgument("kinds", f"at most {len(KINDS)} kinds")
        kinds: list[str] = []
        for i, number in enumerate(request.kinds):
            kind = KINDS.get(number)
            if kind is None:
                raise InvalidArgument(f"kinds[{i}]", f"unknown value {number}")
            if kind not in kinds:
                kinds.append(kind)
        query = SuggestQuery(
            prefix=" ".join(words),
            kinds=tuple(kinds or KINDS.values()),
            limit=request.limit or DEFAULT_LIMIT,
        )
        return catalog_pb2.SuggestBooksResponse(suggestions=await suggest(self.pool, query))

    async def ListPopularBooks(
        self, request: catalog_pb2.ListPopularBooksRequest, context: ServicerContext
    ) -> catalog_pb2.ListPopularBooksResponse:
        if not 0 <= request.limit <= MAX_PAGE_SIZE:
            raise InvalidArgument("limit", f"must be between 1 and {MAX_PAGE_SIZE}")
        limit = request.limit or 10
        key = f"popular:{request.category_id}:{limit}"
        cached = self.cache.get_local(key)
        if isinstance(cached, catalog_pb2.ListPopularBooksResponse):
            return cached
        categories = (
            await self._subtree(_category("category_id", request.category_id))
            if request.category_id
            else None
        )
        books, refreshed = await popular_books(self.pool, categories, limit)
        response = catalog_pb2.ListPopularBooksResponse(books=books)
        if refreshed is not None:
            response.refresh_time.FromDatetime(refreshed)
        self.cache.put_local(key, response)
        return response

    # --- inventory and views -------------------------------------------------------------

    async def AdjustInventory(
        self, request: catalog_pb2.AdjustInventoryRequest, context: ServicerContext
    ) -> catalog_pb2.AdjustInventoryResponse:
        if not request.adjustments:
            raise InvalidArgument("adjustments", "give at least one adjustment")
        if len(request.adjustments) > MAX_BATCH:
            raise InvalidArgument("adjustments", f"at most {MAX_BATCH} per call")
        idempotent = IdempotentCall.of(ADJUST_INVENTORY, request)
        deltas: dict[int, tuple[int, int]] = {}
        for i, adjustment in enumerate(request.adjustments):
            book_id = check_lookup_id(f"adjustments[{i}].book_id", adjustment.book_id, "book")
            if adjustment.delta == 0:
                raise InvalidArgument(f"adjustments[{i}].delta", "must not be 0")
            purchased = -adjustment.delta if adjustment.is_purchase and adjustment.delta < 0 else 0
            if adjustment.is_purchase and adjustment.delta > 0:
                raise InvalidArgument(
                    f"adjustments[{i}].delta", "a purchase removes stock (delta < 0)"
                )
            delta, bought = deltas.get(book_id, (0, 0))
            delta, bought = delta + adjustment.delta, bought + purchased
            if abs(delta) > MAX_INT32 or bought > MAX_INT32:
                raise InvalidArgument(
                    f"adjustments[{i}].delta",
                    f"the adjustments of book {book_id} add up past {MAX_INT32}",
                )
            deltas[book_id] = (delta, bought)
        response = await self.books.adjust_inventory(deltas, idempotent)
        self._events_written()
        # Stock shows on the product page: those books are invalidated. Search pages are
        # not (stock changes no result; a cached page may show the old stock for 15 min),
        # except the best-seller order when purchase_count changed (the migration's rules).
        await self._cache_written()
        return response

    async def RecordView(
        self, request: catalog_pb2.RecordViewRequest, context: ServicerContext
    ) -> catalog_pb2.RecordViewResponse:
        book_id = check_lookup_id("book_id", request.book_id, "book")
        count = await self.books.record_view(book_id)
        # No invalidation (a view changes no search result, and dropping hot books on every
        # view would defeat their cache): GetBook raises a cached Book's count to this one.
        await self.cache.record_views(book_id, count)
        return catalog_pb2.RecordViewResponse(view_count=count)

    # --- categories, authors, publishers -------------------------------------------------

    async def CreateCategory(
        self, request: catalog_pb2.CreateCategoryRequest, context: ServicerContext
    ) -> catalog_pb2.CreateCategoryResponse:
        category = await self.taxonomy.create_category(request.category)
        self._events_written()
        await self._cache_written()
        return catalog_pb2.CreateCategoryResponse(category=category)

    async def UpdateCategory(
        self, request: catalog_pb2.UpdateCategoryRequest, context: ServicerContext
    ) -> catalog_pb2.UpdateCategoryResponse:
        category = await self.taxonomy.update_category(
            request.category, list(request.update_mask.paths)
        )
        self._events_written()
        await self._cache_written()
        return catalog_pb2.UpdateCategoryResponse(category=category)

    async def ListCategories(
        self, request: catalog_pb2.ListCategoriesRequest, context: ServicerContext
    ) -> catalog_pb2.ListCategoriesResponse:
        size = page_size(request.page_size)
        query = {
            "parent": request.parent_category_id,
            "direct": request.direct_children_only,
            "size": size,
        }
        position = decode_page_token(request.page_token, query, {"after": Int()}) or {"after": 0}
        key = await self.cache.category_key(f"list:{json.dumps({**query, **position})}")
        cached = await self.cache.get_category(key)
        if cached is not None:
            return catalog_pb2.ListCategoriesResponse.FromString(cached)
        if request.parent_category_id:
            await self._subtree(_category("parent_category_id", request.parent_category_id))
        categories = await self.taxonomy.list_categories(
            request.parent_category_id,
            request.direct_children_only,
            int(position["after"]),
            size + 1,
        )
        page, token = split_page(categories, size, lambda c: {"after": c.id}, query)
        response = catalog_pb2.ListCategoriesResponse(categories=page, next_page_token=token)
        await self.cache.put_category(key, response.SerializeToString())
        return response

    async def CreateAuthor(
        self, request: catalog_pb2.CreateAuthorRequest, context: ServicerContext
    ) -> catalog_pb2.CreateAuthorResponse:
        author = await self.taxonomy.create_author(request.author)
        self._events_written()
        return catalog_pb2.CreateAuthorResponse(author=author)

    async def UpdateAuthor(
        self, request: catalog_pb2.UpdateAuthorRequest, context: ServicerContext
    ) -> catalog_pb2.UpdateAuthorResponse:
        author = await self.taxonomy.update_author(request.author, list(request.update_mask.paths))
        self._events_written()
        # A rename rewrites the author's books (their names and search vectors), which
        # invalidates them and the searches; a bio edit invalidates nothing.
        await self._cache_written()
        return catalog_pb2.UpdateAuthorResponse(author=author)

    async def ListAuthors(
        self, request: catalog_pb2.ListAuthorsRequest, context: ServicerContext
    ) -> catalog_pb2.ListAuthorsResponse:
        check_text("last_name_prefix", request.last_name_prefix, max_length=100)
        size = page_size(request.page_size)
        query = {"prefix": request.last_name_prefix, "size": size}
        shape = {"after": (Text(100), Text(100), Int())}
        position = decode_page_token(request.page_token, query, shape)
        after = tuple(position["after"]) if position else None
        authors = await self.taxonomy.list_authors(
            request.last_name_prefix.strip(), after, size + 1
        )
        page, token = split_page(
            authors, size, lambda a: {"after": [a.last_name, a.first_name, a.id]}, query
        )
        return catalog_pb2.ListAuthorsResponse(authors=page, next_page_token=token)

    async def CreatePublisher(
        self, request: catalog_pb2.CreatePublisherRequest, context: ServicerContext
    ) -> catalog_pb2.CreatePublisherResponse:
        publisher = await self.taxonomy.create_publisher(request.publisher)
        self._events_written()
        return catalog_pb2.CreatePublisherResponse(publisher=publisher)

    async def UpdatePublisher(
        self, request: catalog_pb2.UpdatePublisherRequest, context: ServicerContext
    ) -> catalog_pb2.UpdatePublisherResponse:
        publisher = await self.taxonomy.update_publisher(
            request.publisher, list(request.update_mask.paths)
        )
        self._events_written()
        return catalog_pb2.UpdatePublisherResponse(publisher=publisher)

    async def ListPublishers(
        self, request: catalog_pb2.ListPublishersRequest, context: ServicerContext
    ) -> catalog_pb2.ListPublishersResponse:
        size = page_size(request.page_size)
        query = {"size": size}
        position = decode_page_token(request.page_token, query, {"after": (Text(200), Int())})
        after = tuple(position["after"]) if position else None
        fetched = await self.taxonomy.list_publishers(after, size + 1)
        page, token = split_page(fetched, size, lambda p: {"after": [p.name, p.id]}, query)
        return catalog_pb2.ListPublishersResponse(publishers=page, next_page_token=token)

    # --- reviews -------------------------------------------------------------------------

    async def AddReview(
        self, request: catalog_pb2.AddReviewRequest, context: ServicerContext
    ) -> catalog_pb2.AddReviewResponse:
        # The author is the caller; Review.user_id and is_verified_purchase in the request
        # are output only and ignored (catalog.proto).
        review = await self.reviews.add(request.review, signed_in_caller().subject)
        self._events_written()
        await self._cache_written()  # the book's rating, and the rating sort
        return catalog_pb2.AddReviewResponse(review=review)

    async def UpdateReview(
        self, request: catalog_pb2.UpdateReviewRequest, context: ServicerContext
    ) -> catalog_pb2.UpdateReviewResponse:
        review = await self.reviews.update(
            request.review, list(request.update_mask.paths), signed_in_caller().subject
        )
        self._events_written()
        await self._cache_written()
        return catalog_pb2.UpdateReviewResponse(review=review)

    async def ModerateReview(
        self, request: catalog_pb2.ModerateReviewRequest, context: ServicerContext
    ) -> catalog_pb2.ModerateReviewResponse:
        review = await self.reviews.moderate(request.review_id, request.status)
        self._events_written()
        await self._cache_written()
        return catalog_pb2.ModerateReviewResponse(review=review)

    async def DeleteReview(
        self, request: catalog_pb2.DeleteReviewRequest, context: ServicerContext
    ) -> catalog_pb2.DeleteReviewResponse:
        caller = signed_in_caller()
        # An admin may delete any review; a shopper only their own.
        await self.reviews.delete(
            request.review_id, None if caller.has(Role.ADMIN) else caller.subject
        )
        self._events_written()
        await self._cache_written()
        return catalog_pb2.DeleteReviewResponse()

    async def ListReviews(
        self, request: catalog_pb2.ListReviewsRequest, context: ServicerContext
    ) -> catalog_pb2.ListReviewsResponse:
        size = page_size(request.page_size)
        query = {"book": request.book_id, "status": request.status, "size": size}
        position = decode_page_token(request.page_token, query, {"before": Int(1, MAX_ID)})
        before = int(position["before"]) if position else None
        reviews = await self.reviews.list(request.book_id, request.status, before, size + 1)
        page, token = split_page(reviews, size, lambda r: {"before": r.id}, query)
        return catalog_pb2.ListReviewsResponse(reviews=page, next_page_token=token)


def _raise_view_count(book: catalog_pb2.Book, views: int | None) -> None:
    """A cached Book shows the views counted when it was loaded; RecordView keeps the
    latest count beside it in Redis, and the larger of the two is shown."""
    if views is not None and views > book.view_count:
        book.view_count = views


def _book_response(data: bytes, views: int | None) -> catalog_pb2.GetBookResponse:
    response = catalog_pb2.GetBookResponse()
    response.book.MergeFromString(data)
    _raise_view_count(response.book, views)
    return response


def _positive(field: str, value: int) -> int:
    if value <= 0:
        raise InvalidArgument(field, "must be a positive id")
    return value


def _category(field: str, category_id: int) -> int:
    return check_lookup_id(field, category_id, "category")


def _search_request(
    request: catalog_pb2.SearchBooksRequest,
) -> tuple[SearchFilters, str, int]:
    """A SearchBooks request's filters (the category not resolved yet), sort and page size."""
    check_text("query", request.query, max_length=500)
    sort = SORTS.get(request.sort)
    if sort is None:
        raise InvalidArgument("sort", f"unknown value {request.sort}")
    min_price = (
        money_to_decimal("min_price", request.min_price) if request.HasField("min_price") else None
    )
    max_price = (
        money_to_decimal("max_price", request.max_price) if request.HasField("max_price") else None
    )
    if min_price is not None and max_price is not None and min_price > max_price:
        raise InvalidArgument("max_price", "must be >= min_price")
    filters = SearchFilters(
        text=request.query.strip(),
        category_ids=None,
        min_price=min_price,
        max_price=max_price,
        format=check_enum("format", request.format, FORMATS, default=None),
        language=check_language("language_code", request.language_code)
        if request.language_code
        else None,
    )
    return filters, sort, page_size(request.page_size)


@dataclass(frozen=True)
class CachedTotal:
    """A search's total as cached (for every page and sort of its query and filters), and
    the corrected query it was counted for (None: as typed)."""

    total: Total
    corrected: str | None


def _cached_total(data: bytes | None) -> CachedTotal | None:
    entry = json.loads(data) if data is not None else None
    if not isinstance(entry, list) or len(entry) != 3:
        return None  # none, or written by an older release (no correction in it)
    count, estimate, corrected = entry
    return CachedTotal(Total(int(count), bool(estimate)), corrected)
