"""SessionService handlers: validate, call the session store, map.

Who may use a session is decided in services/cart/owners.py (its credential, or the user
it is bound to); what a session holds is services/cart/sessions.py.
"""

from __future__ import annotations

import re
from typing import Any

import langcodes

from cloudshelf.cart.v1 import cart_pb2, cart_pb2_grpc
from cloudshelf.runtime.auth import caller, signed_in_caller
from cloudshelf.runtime.client_info import client_info
from cloudshelf.runtime.errors import InvalidArgument
from cloudshelf.runtime.idempotency import IdempotentCall
from cloudshelf.runtime.paging import Text, decode_page_token, encode_page_token
from cloudshelf.runtime.rpc import ServicerContext
from services.cart.handlers import MAX_ETAG_LENGTH, merge_session_cart
from services.cart.owners import (
    check_session_holder,
    presented_credential,
    require_some_credential,
    session_id_field,
)
from services.cart.sessions import (
    ActivityValue,
    PreferencesValue,
    SessionStore,
    activity_details,
    session_from_item,
)
from services.cart.store import CartStore

# ISO 4217 codes of circulating currencies (the standard's list as of 2026, without funds,
# precious metals, and testing or special codes such as XAU, XDR, XTS, XXX): what a price
# can be shown in. A constant rather than a dependency: it changes a few times a decade.
CURRENCY_CODES = frozenset(
    """
    AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BHD BIF BMD BND BOB BRL BSD BTN BWP BYN
    BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP
    GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS
    KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR
    MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD
    RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP
    TRY TTD TWD TZS UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW
    ZWG
    """.split()
)
THEMES = frozenset({"light", "dark", "system"})
# RFC 5646 recommends supporting tags of at least 35 characters; longer is refused early.
MAX_LANGUAGE_TAG = 35
ACTION = re.compile(r"[a-z][a-z0-9_.:-]{0,63}")
MAX_DETAILS_BYTES = 2048
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
_PAGE_SHAPE = {"after": Text(max_length=64)}


def _preferences(value: cart_pb2.Preferences, field: str) -> PreferencesValue:
    currency = value.currency_code
    if currency and currency not in CURRENCY_CODES:
        raise InvalidArgument(
            f"{field}.currency_code",
            "must be the ISO 4217 code of a circulating currency, upper case (e.g. EUR)",
        )
    language = value.language
    if language:
        # langcodes checks the tag's syntax and every subtag against the IANA registry
        # (a regex would accept "xx-YY"); standardize_tag gives its canonical form.
        if len(language) > MAX_LANGUAGE_TAG or not langcodes.tag_is_valid(language):
            raise InvalidArgument(
                f"{field}.language",
                f"must be a valid BCP 47 language tag of at most {MAX_LANGUAGE_TAG} "
                "characters (e.g. en, pt-BR)",
            )
        language = langcodes.standardize_tag(language)
    if value.theme and value.theme not in THEMES:
        raise InvalidArgument(f"{field}.theme", f"must be one of {', '.join(sorted(THEMES))}")
    return PreferencesValue(currency, language, value.theme)


def _activity(value: cart_pb2.Activity) -> ActivityValue:
    if not ACTION.fullmatch(value.action):
        raise InvalidArgument(
            "activity.action",
            "must be 1..64 characters: a lower-case letter, then a-z 0-9 _ . : -",
        )
    details = ""
    if value.details_json:
        compact = activity_details(value.details_json, MAX_DETAILS_BYTES)
        if compact is None:
            raise InvalidArgument(
                "activity.details_json",
                f"must be a JSON object of at most {MAX_DETAILS_BYTES} bytes",
            )
        details = compact
    return ActivityValue(value.action, details)


def _etag(value: str) -> str:
    if len(value) > MAX_ETAG_LENGTH:
        raise InvalidArgument("etag", f"at most {MAX_ETAG_LENGTH} characters: pass a Session.etag")
    return value


def _page_size(value: int) -> int:
    if value < 0:
        raise InvalidArgument("page_size", "must not be negative (0: the default)")
    return min(value or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


class SessionHandlers(cart_pb2_grpc.SessionServiceServicer):
    def __init__(self, sessions: SessionStore, carts: CartStore) -> None:
        self.sessions = sessions
        self.carts = carts

    async def _held(self, context: ServicerContext, session_id: str) -> dict[str, Any]:
        """The live session, when the caller holds it (owners.check_session_holder)."""
        credential = presented_credential(context)
        require_some_credential(credential)
        item = await self.sessions.live(session_id)
        check_session_holder(item, credential, caller())
        return item

    async def CreateSession(
        self, request: cart_pb2.CreateSessionRequest, context: ServicerContext
    ) -> cart_pb2.CreateSessionResponse:
        preferences = _preferences(request.preferences, "preferences")
        call = IdempotentCall.of("session.CreateSession", request)
        session, credential = await self.sessions.create(preferences, client_info(context), call)
        return cart_pb2.CreateSessionResponse(session=session, session_credential=credential)

    async def GetSession(
        self, request: cart_pb2.GetSessionRequest, context: ServicerContext
    ) -> cart_pb2.GetSessionResponse:
        session_id = session_id_field(request.session_id)
        item = await self._held(context, session_id)
        return cart_pb2.GetSessionResponse(session=session_from_item(item))

    async def TouchSession(
        self, request: cart_pb2.TouchSessionRequest, context: ServicerContext
    ) -> cart_pb2.TouchSessionResponse:
        session_id = session_id_field(request.session_id)
        activity = _activity(request.activity) if request.HasField("activity") else None
        await self._held(context, session_id)
        return cart_pb2.TouchSessionResponse(
            session=await self.sessions.touch(session_id, activity)
        )

    async def UpdatePreferences(
        self, request: cart_pb2.UpdatePreferencesRequest, context: ServicerContext
    ) -> cart_pb2.UpdatePreferencesResponse:
        session_id = session_id_field(request.session_id)
        preferences = _preferences(request.preferences, "preferences")
        etag = _etag(request.etag)
        await self._held(context, session_id)
        session = await self.sessions.update_preferences(session_id, preferences, etag=etag)
        return cart_pb2.UpdatePreferencesResponse(session=session)

    async def AuthenticateSession(
        self, request: cart_pb2.AuthenticateSessionRequest, context: ServicerContext
    ) -> cart_pb2.AuthenticateSessionResponse:
        session_id = session_id_field(request.session_id)
        subject = signed_in_caller().subject
        await merge_session_cart(
            self.carts, self.sessions, context, session_id, subject, etag="", call=None
        )
        item = await self.sessions.live(session_id)
        return cart_pb2.AuthenticateSessionResponse(session=session_from_item(item))

    async def DeleteSession(
        self, request: cart_pb2.DeleteSessionRequest, context: ServicerContext
    ) -> cart_pb2.DeleteSessionResponse:
        session_id = session_id_field(request.session_id)
        await self._held(context, session_id)
        await self.sessions.delete(session_id)
        return cart_pb2.DeleteSessionResponse()

    async def ListUserSessions(
        self, request: cart_pb2.ListUserSessionsRequest, context: ServicerContext
    ) -> cart_pb2.ListUserSessionsResponse:
        size = _page_size(request.page_size)
        subject = signed_in_caller().subject
        # Bound to the caller: another user's token is refused, not read as a position.
        query = {"rpc": "ListUserSessions", "user": subject}
        position = decode_page_token(request.page_token, query, _PAGE_SHAPE)
        after = None if position is None else str(position["after"])
        ids, more = await self.sessions.user_session_ids(subject, size, after)
        found = await self.sessions.batch_read(ids)
        # The index is eventually consistent: keep only sessions still the caller's.
        sessions = [
            session_from_item(found[session_id])
            for session_id in ids
            if session_id in found and found[session_id].get("userId") == subject
        ]
        token = encode_page_token({"after": ids[-1]}, query) if more and ids else ""
        return cart_pb2.ListUserSessionsResponse(sessions=sessions, next_page_token=token)
