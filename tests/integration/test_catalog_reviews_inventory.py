"""Reviews keep ratings exact; inventory changes are atomic and never oversell; views;
categories, authors and publishers."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.field_mask_pb2 import FieldMask

from cloudshelf.catalog.v1 import catalog_pb2 as pb
from tests.conftest import CatalogAs, User, expect_error
from tests.factories import book, word

if TYPE_CHECKING:
    from cloudshelf.catalog.v1.catalog_pb2_grpc import CatalogServiceAsyncStub

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


async def create(catalog: CatalogServiceAsyncStub, **fields: Any) -> pb.Book:
    return (await catalog.CreateBook(pb.CreateBookRequest(book=book(**fields)))).book


async def rating_of(catalog: CatalogServiceAsyncStub, book_id: int) -> tuple[float, int]:
    shown = (await catalog.GetBook(pb.GetBookRequest(id=book_id))).book
    return shown.rating_average, shown.rating_count


async def add_review(catalog: CatalogServiceAsyncStub, book_id: int, rating: int) -> pb.Review:
    """A review by the stub's caller (the token's user)."""
    request = pb.AddReviewRequest(review=pb.Review(book_id=book_id, rating=rating, title="t"))
    return (await catalog.AddReview(request)).review


async def test_ratings_are_exact_after_add_edit_moderate_delete(
    catalog: CatalogServiceAsyncStub, catalog_as: CatalogAs, reviewers: list[User]
) -> None:
    target = await create(catalog)
    first_author, second_author = catalog_as(reviewers[0]), catalog_as(reviewers[1])
    first = await add_review(first_author, target.id, 5)
    await add_review(second_author, target.id, 2)
    assert await rating_of(catalog, target.id) == (3.5, 2)

    await first_author.UpdateReview(
        pb.UpdateReviewRequest(
            review=pb.Review(id=first.id, rating=4), update_mask=FieldMask(paths=["rating"])
        )
    )
    assert await rating_of(catalog, target.id) == (3.0, 2)

    await catalog.ModerateReview(
        pb.ModerateReviewRequest(review_id=first.id, status=pb.REVIEW_STATUS_REJECTED)
    )
    assert await rating_of(catalog, target.id) == (2.0, 1)
    published = await catalog.ListReviews(pb.ListReviewsRequest(book_id=target.id))
    assert [r.user_id for r in published.reviews] == [reviewers[1].subject]
    rejected = await catalog.ListReviews(
        pb.ListReviewsRequest(book_id=target.id, status=pb.REVIEW_STATUS_REJECTED)
    )
    assert [r.id for r in rejected.reviews] == [first.id]

    await catalog.ModerateReview(
        pb.ModerateReviewRequest(review_id=first.id, status=pb.REVIEW_STATUS_PUBLISHED)
    )
    await first_author.DeleteReview(pb.DeleteReviewRequest(review_id=first.id))
    assert await rating_of(catalog, target.id) == (2.0, 1)


async def test_concurrent_reviews_are_all_counted(
    catalog: CatalogServiceAsyncStub, catalog_as: CatalogAs, reviewers: list[User]
) -> None:
    target = await create(catalog)
    ratings = [(i % 5) + 1 for i in range(len(reviewers))]
    authors = [catalog_as(user) for user in reviewers]
    await asyncio.gather(
        *(add_review(a, target.id, r) for a, r in zip(authors, ratings, strict=True))
    )
    average, count = await rating_of(catalog, target.id)
    assert count == len(reviewers)
    assert average == round(sum(ratings) / len(reviewers), 2)


async def test_review_errors(
    catalog: CatalogServiceAsyncStub, catalog_as: CatalogAs, reviewers: list[User]
) -> None:
    target = await create(catalog)
    author = catalog_as(reviewers[0])
    await add_review(author, target.id, 4)
    # One review per user and book, whatever user_id the request names.
    await expect_error(
        author.AddReview(
            pb.AddReviewRequest(review=pb.Review(book_id=target.id, user_id="other", rating=3))
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    other = catalog_as(reviewers[1])
    for review, field in (
        (pb.Review(book_id=target.id, rating=0), "review.rating"),
        (pb.Review(book_id=target.id, rating=6), "review.rating"),
        (pb.Review(book_id=target.id, rating=3, title="t" * 201), "review.title"),
        (pb.Review(book_id=0, rating=3), "review.book_id"),
    ):
        await expect_error(other.AddReview(pb.AddReviewRequest(review=review)), INVALID, field)
    await expect_error(
        other.AddReview(pb.AddReviewRequest(review=pb.Review(book_id=2_000_000_000, rating=3))),
        NOT_FOUND,
    )
    await expect_error(
        catalog.ModerateReview(
            pb.ModerateReviewRequest(review_id=2_000_000_000, status=pb.REVIEW_STATUS_PUBLISHED)
        ),
        NOT_FOUND,
    )
    await expect_error(
        catalog.ModerateReview(
            pb.ModerateReviewRequest(review_id=1, status=pb.REVIEW_STATUS_UNSPECIFIED)
        ),
        INVALID,
        "status",
    )
    await expect_error(
        catalog.DeleteReview(pb.DeleteReviewRequest(review_id=2_000_000_000)), NOT_FOUND
    )
    await expect_error(catalog.ListReviews(pb.ListReviewsRequest(book_id=2_000_000_000)), NOT_FOUND)


def adjust(
    *changes: tuple[int, int], purchase: bool = False, request_id: str = ""
) -> pb.AdjustInventoryRequest:
    return pb.AdjustInventoryRequest(
        adjustments=[
            pb.InventoryAdjustment(book_id=b, delta=d, is_purchase=purchase) for b, d in changes
        ],
        request_id=request_id,
    )


async def test_inventory_batch_is_all_or_nothing(catalog: CatalogServiceAsyncStub) -> None:
    a, b = await create(catalog), await create(catalog)
    levels = await catalog.AdjustInventory(adjust((a.id, 10), (b.id, 3)))
    assert {(s.book_id, s.stock_quantity) for s in levels.stock_levels} == {(a.id, 10), (b.id, 3)}
    # b would go negative: nothing is applied, and the error names b.
    await expect_error(
        catalog.AdjustInventory(adjust((a.id, -4), (b.id, -5), purchase=True)),
        grpc.StatusCode.FAILED_PRECONDITION,
        f"book {b.id}",
    )
    assert (await catalog.GetBook(pb.GetBookRequest(id=a.id))).book.stock_quantity == 10
    await catalog.AdjustInventory(adjust((a.id, -4), (b.id, -3), purchase=True))
    shown = (await catalog.BatchGetBooks(pb.BatchGetBooksRequest(ids=[a.id, b.id]))).books
    assert [(x.stock_quantity, x.purchase_count) for x in shown] == [(6, 4), (0, 3)]
    await expect_error(
        catalog.AdjustInventory(adjust((a.id, 1), (2_000_000_000, 1))), NOT_FOUND, "2000000000"
    )
    assert (await catalog.GetBook(pb.GetBookRequest(id=a.id))).book.stock_quantity == 6


async def test_concurrent_purchases_never_oversell(catalog: CatalogServiceAsyncStub) -> None:
    a, b = await create(catalog), await create(catalog)
    await catalog.AdjustInventory(adjust((a.id, 20), (b.id, 20)))

    async def buy(order: int) -> bool:
        # Alternating book order in the batch: locks are taken by id, so no deadlock.
        changes = ((a.id, -1), (b.id, -1)) if order % 2 else ((b.id, -1), (a.id, -1))
        try:
            await catalog.AdjustInventory(adjust(*changes, purchase=True))
            return True
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, exc.details()
            return False

    results = await asyncio.gather(*(buy(i) for i in range(35)))
    assert sum(results) == 20
    shown = (await catalog.BatchGetBooks(pb.BatchGetBooksRequest(ids=[a.id, b.id]))).books
    assert [(x.stock_quantity, x.purchase_count) for x in shown] == [(0, 20), (0, 20)]


async def test_a_retried_inventory_request_is_applied_once(
    catalog: CatalogServiceAsyncStub,
) -> None:
    a = await create(catalog)
    request = adjust((a.id, 5), request_id=str(uuid.uuid4()))
    first, second = await asyncio.gather(
        catalog.AdjustInventory(request), catalog.AdjustInventory(request)
    )
    assert first == second
    assert (await catalog.GetBook(pb.GetBookRequest(id=a.id))).book.stock_quantity == 5


async def test_inventory_validation(catalog: CatalogServiceAsyncStub) -> None:
    a = await create(catalog)
    await expect_error(catalog.AdjustInventory(pb.AdjustInventoryRequest()), INVALID, "adjustments")
    await expect_error(catalog.AdjustInventory(adjust((a.id, 0))), INVALID, "adjustments[0].delta")
    await expect_error(catalog.AdjustInventory(adjust((0, 1))), INVALID, "adjustments[0].book_id")
    await expect_error(
        catalog.AdjustInventory(adjust((a.id, 3), purchase=True)), INVALID, "purchase"
    )


async def test_record_view_counts(catalog: CatalogServiceAsyncStub) -> None:
    a = await create(catalog)
    counts = await asyncio.gather(
        *(catalog.RecordView(pb.RecordViewRequest(book_id=a.id)) for _ in range(10))
    )
    assert sorted(c.view_count for c in counts) == list(range(1, 11))
    await expect_error(catalog.RecordView(pb.RecordViewRequest(book_id=2_000_000_000)), NOT_FOUND)


async def test_category_tree_rejects_cycles(catalog: CatalogServiceAsyncStub) -> None:
    async def category(name: str, parent: int = 0) -> pb.Category:
        request = pb.CreateCategoryRequest(
            category=pb.Category(name=f"{name} {word()}", parent_category_id=parent)
        )
        return (await catalog.CreateCategory(request)).category

    top = await category("Top")
    middle = await category("Middle", top.id)
    bottom = await category("Bottom", middle.id)
    assert bottom.slug and bottom.is_active
    for new_parent in (top.id, bottom.id):  # itself, its descendant
        await expect_error(
            catalog.UpdateCategory(
                pb.UpdateCategoryRequest(
                    category=pb.Category(id=top.id, parent_category_id=new_parent),
                    update_mask=FieldMask(paths=["parent_category_id"]),
                )
            ),
            INVALID,
            "ancestor",
        )
    moved = await catalog.UpdateCategory(
        pb.UpdateCategoryRequest(
            category=pb.Category(id=bottom.id, parent_category_id=top.id),
            update_mask=FieldMask(paths=["parent_category_id"]),
        )
    )
    assert moved.category.parent_category_id == top.id
    children = await catalog.ListCategories(
        pb.ListCategoriesRequest(parent_category_id=top.id, direct_children_only=True)
    )
    assert {c.id for c in children.categories} == {middle.id, bottom.id}
    await expect_error(
        catalog.CreateCategory(pb.CreateCategoryRequest(category=pb.Category(name=top.name))),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    await expect_error(
        catalog.CreateCategory(pb.CreateCategoryRequest(category=pb.Category())),
        INVALID,
        "category.name",
    )
    await expect_error(
        catalog.CreateCategory(
            pb.CreateCategoryRequest(
                category=pb.Category(name=word(), parent_category_id=2_000_000_000)
            )
        ),
        NOT_FOUND,
    )


async def test_authors_and_publishers(catalog: CatalogServiceAsyncStub) -> None:
    prefix = word()
    for first in ("Ann", "Bob", "Cy"):
        await catalog.CreateAuthor(
            pb.CreateAuthorRequest(author=pb.Author(first_name=first, last_name=f"{prefix}son"))
        )
    page = await catalog.ListAuthors(pb.ListAuthorsRequest(last_name_prefix=prefix, page_size=2))
    rest = await catalog.ListAuthors(
        pb.ListAuthorsRequest(last_name_prefix=prefix, page_size=2, page_token=page.next_page_token)
    )
    assert [a.first_name for a in (*page.authors, *rest.authors)] == ["Ann", "Bob", "Cy"]
    assert not rest.next_page_token
    await expect_error(
        catalog.CreateAuthor(pb.CreateAuthorRequest(author=pb.Author(first_name="x"))),
        INVALID,
        "author.last_name",
    )
    await expect_error(
        catalog.UpdateAuthor(
            pb.UpdateAuthorRequest(
                author=pb.Author(id=2_000_000_000, bio="b"), update_mask=FieldMask(paths=["bio"])
            )
        ),
        NOT_FOUND,
    )

    name = f"Press {word()}"
    created = (
        await catalog.CreatePublisher(
            pb.CreatePublisherRequest(publisher=pb.Publisher(name=name, established_year=1901))
        )
    ).publisher
    await expect_error(
        catalog.CreatePublisher(pb.CreatePublisherRequest(publisher=pb.Publisher(name=name))),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    await expect_error(
        catalog.CreatePublisher(
            pb.CreatePublisherRequest(publisher=pb.Publisher(name=word(), established_year=99))
        ),
        INVALID,
        "established_year",
    )
    updated = await catalog.UpdatePublisher(
        pb.UpdatePublisherRequest(
            publisher=pb.Publisher(id=created.id, country="FR"),
            update_mask=FieldMask(paths=["country"]),
        )
    )
    assert updated.publisher.country == "FR" and updated.publisher.name == name
    listed = await catalog.ListPublishers(pb.ListPublishersRequest(page_size=100))
    assert listed.publishers
