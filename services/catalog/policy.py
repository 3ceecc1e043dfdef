"""Who may call each CatalogService RPC (enforced by the runtime's auth interceptor).

Reads are public. Changes to books, authors, publishers and categories, stock and
moderation are the back office's (admins) or another service's. Reviews are written by
signed-in shoppers as themselves: a shopper edits and deletes only their own reviews; an
admin may delete any review (moderation hides a review, deletion removes abuse for good)
but edits no one else's words.
"""

from __future__ import annotations

from cloudshelf.runtime.auth import ADMIN_OR_SERVICE, PUBLIC, SHOPPER, SHOPPER_OR_ADMIN, Policy

CATALOG_POLICY: Policy = {
    "GetBook": PUBLIC,
    "BatchGetBooks": PUBLIC,
    "ListBooks": PUBLIC,
    "SearchBooks": PUBLIC,
    "SuggestBooks": PUBLIC,
    "ListPopularBooks": PUBLIC,
    "ListAuthors": PUBLIC,
    "ListPublishers": PUBLIC,
    "ListCategories": PUBLIC,
    "ListReviews": PUBLIC,
    # A page view, counted for anonymous visitors too.
    "RecordView": PUBLIC,
    "CreateBook": ADMIN_OR_SERVICE,
    "UpdateBook": ADMIN_OR_SERVICE,
    "CreateAuthor": ADMIN_OR_SERVICE,
    "UpdateAuthor": ADMIN_OR_SERVICE,
    "CreatePublisher": ADMIN_OR_SERVICE,
    "UpdatePublisher": ADMIN_OR_SERVICE,
    "CreateCategory": ADMIN_OR_SERVICE,
    "UpdateCategory": ADMIN_OR_SERVICE,
    "AdjustInventory": ADMIN_OR_SERVICE,
    "ModerateReview": ADMIN_OR_SERVICE,
    "AddReview": SHOPPER,
    "UpdateReview": SHOPPER,
    # The handler checks that a shopper deletes only their own review.
    "DeleteReview": SHOPPER_OR_ADMIN,
}

POLICIES: dict[str, Policy] = {"cloudshelf.catalog.v1.CatalogService": CATALOG_POLICY}
