"""NotificationService handlers: the caller's own notifications."""

from __future__ import annotations

from cloudshelf.cart.v1 import cart_pb2, cart_pb2_grpc
from cloudshelf.runtime.errors import InvalidArgument
from cloudshelf.runtime.paging import Text, decode_page_token, split_page
from cloudshelf.runtime.rpc import ServicerContext
from cloudshelf.runtime.validation import check_text
from services.cart.notifications import MAX_NOTIFICATION_ID_LENGTH, NotificationStore
from services.cart.owners import cart_owner
from services.cart.sessions import SessionStore

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
# At most this many ids per MarkNotificationsRead (one DynamoDB transaction).
MAX_MARK_IDS = 100
_PAGE_SHAPE = {"after": Text(max_length=MAX_NOTIFICATION_ID_LENGTH)}


def _page_size(value: int) -> int:
    if value < 0:
        raise InvalidArgument("page_size", "must not be negative")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _notification_ids(request: cart_pb2.MarkNotificationsReadRequest) -> list[str]:
    if request.all and request.notification_ids:
        raise InvalidArgument("all", "either notification_ids or all, not both")
    if not request.all and not request.notification_ids:
        raise InvalidArgument("notification_ids", "name at least one notification, or set all")
    if len(request.notification_ids) > MAX_MARK_IDS:
        raise InvalidArgument("notification_ids", f"at most {MAX_MARK_IDS} ids per call")
    ids: list[str] = []
    for position, value in enumerate(request.notification_ids):
        field = f"notification_ids[{position}]"
        if not value:
            raise InvalidArgument(field, "must not be empty")
        check_text(field, value, max_length=MAX_NOTIFICATION_ID_LENGTH)
        if value not in ids:  # a transaction may not name one item twice
            ids.append(value)
    return ids


class NotificationHandlers(cart_pb2_grpc.NotificationServiceServicer):
    def __init__(self, notifications: NotificationStore, sessions: SessionStore) -> None:
        self.notifications = notifications
        self.sessions = sessions

    async def _owner_key(self, context: ServicerContext) -> str:
        # The owner of the caller's cart (a shopper's token or an anonymous session's
        # credential), resolved exactly as the cart's handlers resolve it.
        return (await cart_owner(context, self.sessions)).key

    async def ListNotifications(
        self, request: cart_pb2.ListNotificationsRequest, context: ServicerContext
    ) -> cart_pb2.ListNotificationsResponse:
        size = _page_size(request.page_size)
        owner = await self._owner_key(context)
        # Bound to the owner and the filter: a token is refused for another caller's list.
        query = {"owner": owner, "unread_only": request.unread_only}
        position = decode_page_token(request.page_token, query, _PAGE_SHAPE)
        fetched = await self.notifications.newest_first(
            owner,
            size + 1,
            after=position["after"] if position else None,
            unread_only=request.unread_only,
        )
        page, next_token = split_page(fetched, size, lambda n: {"after": n.id}, query)
        return cart_pb2.ListNotificationsResponse(notifications=page, next_page_token=next_token)

    async def MarkNotificationsRead(
        self, request: cart_pb2.MarkNotificationsReadRequest, context: ServicerContext
    ) -> cart_pb2.MarkNotificationsReadResponse:
        ids = _notification_ids(request)
        owner = await self._owner_key(context)
        if request.all:
            await self.notifications.mark_all_read(owner)
        else:
            await self.notifications.mark_read(owner, ids)
        return cart_pb2.MarkNotificationsReadResponse()
