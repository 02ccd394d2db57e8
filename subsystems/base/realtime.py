"""PocketBase's realtime protocol over Server-Sent Events, per org.

`GET /api/realtime` opens a stream and sends `PB_CONNECT` (the SSE `id` and the data's
`clientId` carry the client id). `POST /api/realtime {clientId, subscriptions}` replaces the
client's subscriptions; topics are `collection/*`, `collection/<recordId>`, `collection` or
`*`, optionally followed by `?options={"query": {…}, "headers": {…}}` as the SDK sends them:
`filter`, `expand` and `fields` in the query shape what the topic delivers, and the whole
query and headers are what `@request.query.*` and `@request.headers.*` read when rules are
checked for that subscription. Events are `{action, record}`, named by the topic as sent.

The SDK's EventSource cannot send an Authorization header, so the stream may be opened
anonymously; the first authenticated POST binds the client to that identity (and so to its
org), and any later POST from another identity is refused. A client receives only events of
its own org that its identity may view (the collection's view rule, checked per identity).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, urlencode

import msgspec
import sqlalchemy as sa
import structlog

from hanzocloud.errors import InvalidArgument, NotFound, Overloaded, PermissionDenied
from hanzocloud.identity import Identity
from hanzocloud.routing import decode_json
from subsystems.base.collections import Collection
from subsystems.base.expand import expand_records
from subsystems.base.filter_sql import compile_filter
from subsystems.base.query import Tree, parse_fields, parse_tree, pick
from subsystems.base.records import rule_filter
from subsystems.base.store import REQUEST_SCOPE, BaseStore, Event, Tx, is_admin

log = structlog.get_logger("hanzocloud.base.realtime")
MAX_CLIENTS = 10_000  # streams on this server
MAX_PER_ORG = 2_500  # bound to one org's identities: no org takes every slot
MAX_UNBOUND = 1_000  # opened without a token and not yet claimed by a subscription
MAX_UNBOUND_PER_SOURCE = 50  # of those, from one client address
MAX_TOPICS = 1000
MAX_OPTIONS = 50  # query parameters, and headers, a subscription may carry
_HEADER_TEXT = re.compile(r"[\t\x20-\x7e\x80-\xff]*")  # what a header line may hold
PING_SECONDS = 25.0
UNBOUND_SECONDS = 60.0  # an anonymous stream must be claimed by a subscription this soon


@dataclass(frozen=True, slots=True)
class Topic:
    """One parsed subscription."""

    key: str  # as the client sent it: the SSE event name
    collection: str  # name or id, "*" for every collection
    record_id: str  # "" or "*" for the whole collection
    filter: str = ""
    expand: Tree = field(default_factory=dict)
    fields: Tree | None = None
    # The subscription's own query string and headers (from its options): the request its
    # rules are checked against, as PocketBase does.
    query: bytes = b""
    headers: tuple[tuple[bytes, bytes], ...] = ()

    @property
    def check(self) -> tuple[str, bytes, tuple[tuple[bytes, bytes], ...]]:
        """What decides whether this subscription may see a record, besides the identity."""
        return self.filter, self.query, self.headers

    def request(self) -> dict[str, Any] | None:
        """The request scope `@request.query.*` and `@request.headers.*` read; None when the
        subscription sent neither (they are then "")."""
        if not self.query and not self.headers:
            return None
        return {"type": "http", "query_string": self.query, "headers": list(self.headers)}

    def matches(self, coll: Collection, record_id: str) -> bool:
        if self.collection != "*" and self.collection not in (coll.name, coll.id):
            return False
        return self.record_id in ("", "*") or self.record_id == record_id


def parse_topic(key: Any) -> Topic:
    """Parse `collection/record?options=…`; 400 when malformed."""
    if not isinstance(key, str) or not key or len(key) > 2500:
        raise InvalidArgument("each subscription must be a non-empty string")
    base, _, qs = key.partition("?")
    collection, _, record_id = base.partition("/")
    options: dict[str, str] = {}
    headers: dict[str, str] = {}
    if qs:
        raw = parse_qs(qs).get("options", [""])[0]
        decoded = decode_json(raw, f"subscription {key[:100]!r}: options") if raw else {}
        if not isinstance(decoded, dict):
            decoded = {}
        options = _string_map(key, "query", decoded.get("query"))
        headers = _string_map(key, "headers", decoded.get("headers"))
    return Topic(key, collection, record_id, filter=options.get("filter", ""),
                 expand=parse_tree(options.get("expand", ""), what="expand"),
                 fields=parse_fields(options.get("fields") or None),
                 query=urlencode(sorted(options.items())).encode(),
                 headers=tuple(sorted((name.lower().encode("latin-1"), value.encode("latin-1"))
                                      for name, value in headers.items())))


def _string_map(key: str, what: str, value: Any) -> dict[str, str]:
    """A subscription's `query` or `headers` option as strings (numbers and booleans are
    written as a query string would carry them; null drops the entry); 400 otherwise."""
    if value is None:
        return {}
    where = f"subscription {key[:100]!r}: options.{what}"
    if not isinstance(value, dict) or len(value) > MAX_OPTIONS:
        raise InvalidArgument(f"{where} must be an object of at most {MAX_OPTIONS} entries")
    out = {}
    for name, item in value.items():
        if item is None:
            continue
        if isinstance(item, bool):
            item = "true" if item else "false"
        elif isinstance(item, int | float):
            item = str(item)
        if not isinstance(item, str):
            raise InvalidArgument(f"{where}.{name[:50]} must be a string, number or boolean")
        if what == "headers" and not _HEADER_TEXT.fullmatch(name + item):
            raise InvalidArgument(f"{where}.{name[:50]}: a header is printable latin-1 text")
        out[name] = item
    return out


@dataclass(eq=False)
class Client:
    """One open SSE stream."""

    id: str
    queue: asyncio.Queue[bytes | None]
    identity: Identity | None = None
    topics: list[Topic] = field(default_factory=list)
    opened: float = field(default_factory=time.monotonic)
    source: str = ""  # the client address it was opened from


def _full(where: str) -> Overloaded:
    return Overloaded(f"too many realtime streams on {where}; retry shortly", retry_after=5)


def _frame(client_id: str, event: str, data: Any) -> bytes:
    body = msgspec.json.encode(data).decode()
    return f"id:{client_id}\nevent:{event}\ndata:{body}\n\n".encode()


def _key(identity: Identity) -> Identity:
    return replace(identity, request_id="")


class Broker:
    """Realtime clients of this process, indexed by org, and the delivery of record events."""

    def __init__(self, store: BaseStore) -> None:
        self.store = store
        self.clients: dict[str, Client] = {}
        self.by_org: dict[str, set[Client]] = {}
        self.unbound: dict[str, int] = {}  # streams not yet bound, by client address
        self._pending: asyncio.Queue[tuple[str, list[Event]] | None] = asyncio.Queue()
        store.on_commit.append(self.publish)
        store.viewers = self.viewers

    # -- clients ----------------------------------------------------------------------------

    def connect(self, identity: Identity, source: str = "") -> Client:
        """Register a new stream (bound now if the request was authenticated), opened from
        the client address `source`. Streams are bounded: on this server, per org, and,
        for streams nobody has claimed yet, in all and per address, so that no one (least
        of all someone without a token) can take every slot; beyond, 503 with Retry-After."""
        if len(self.clients) >= MAX_CLIENTS:
            raise _full("this server")
        if identity.org:
            self._room_in(identity.org)
        elif sum(self.unbound.values()) >= MAX_UNBOUND:
            raise _full("this server, for streams opened without a token")
        elif self.unbound.get(source, 0) >= MAX_UNBOUND_PER_SOURCE:
            raise _full("this address, for streams opened without a token")
        client = Client(secrets.token_urlsafe(30), asyncio.Queue(maxsize=1000), source=source)
        self.clients[client.id] = client
        if identity.org:
            self._bind(client, identity)
        else:
            self.unbound[source] = self.unbound.get(source, 0) + 1
        return client

    def _room_in(self, org: str) -> None:
        if len(self.by_org.get(org, ())) >= MAX_PER_ORG:
            raise _full("this org")

    def _bind(self, client: Client, identity: Identity) -> None:
        client.identity = _key(identity)
        self.by_org.setdefault(identity.org, set()).add(client)

    def _unclaimed(self, client: Client) -> None:
        """`client` no longer counts as unbound (claimed, or gone)."""
        left = self.unbound.get(client.source, 0) - 1
        if left > 0:
            self.unbound[client.source] = left
        else:
            self.unbound.pop(client.source, None)

    def disconnect(self, client: Client) -> None:
        """Forget a stream that ended."""
        if self.clients.pop(client.id, None) is None:
            return
        if client.identity is None:
            self._unclaimed(client)
        else:
            group = self.by_org.get(client.identity.org)
            if group is not None:
                group.discard(client)
                if not group:
                    del self.by_org[client.identity.org]

    def subscribe(self, identity: Identity, client_id: Any, topics: Any) -> None:
        """Replace a client's subscriptions; only its own identity may do so."""
        client = self.clients.get(client_id) if isinstance(client_id, str) else None
        if client is None:
            raise NotFound("Missing or invalid client id.")
        if not isinstance(topics, list) or len(topics) > MAX_TOPICS:
            raise InvalidArgument(f"subscriptions must be a list of at most {MAX_TOPICS} topics")
        parsed = [parse_topic(t) for t in topics]
        if client.identity is None:
            self._room_in(identity.org)
            self._unclaimed(client)
            self._bind(client, identity)
        elif client.identity != _key(identity):
            raise PermissionDenied("The current and the previous request authorization "
                                   "don't match.")
        client.topics = parsed

    async def stream(self, client: Client) -> AsyncIterator[bytes]:
        """The SSE body of one client: PB_CONNECT, then events and keep-alive comments."""
        try:
            yield _frame(client.id, "PB_CONNECT", {"clientId": client.id})
            while True:
                try:
                    item = await asyncio.wait_for(client.queue.get(), PING_SECONDS)
                except TimeoutError:
                    if client.identity is None and \
                            time.monotonic() - client.opened > UNBOUND_SECONDS:
                        return  # nobody claimed this stream: free the slot
                    yield b": ping\n\n"
                    continue
                if item is None:
                    return
                yield item
        finally:
            self.disconnect(client)

    def close(self) -> None:
        """End every stream (at shutdown, so the listeners can drain)."""
        for client in list(self.clients.values()):
            with contextlib.suppress(asyncio.QueueFull):
                client.queue.put_nowait(None)
        self._pending.put_nowait(None)

    # -- events -----------------------------------------------------------------------------

    def _targets(self, org: str, coll: Collection, record_id: str) -> list[Client]:
        # tuple() copies the set in one step: a write moved to a worker thread asks this
        # while the loop may connect or drop clients (a client's topics are replaced whole).
        return [c for c in tuple(self.by_org.get(org, ()))
                if any(t.matches(coll, record_id) for t in c.topics)]

    def viewers(self, tx: Tx, coll: Collection, record: dict[str, Any]) -> frozenset[Any]:
        """(identity, topic check) pairs of the org's subscriptions to `record` that may view
        it now; asked inside the writing transaction (see records._announce)."""
        wanted = {(c.identity, t.check): t
                  for c in self._targets(tx.org, coll, record["id"]) if c.identity is not None
                  for t in c.topics if t.matches(coll, record["id"])}
        return frozenset(pair for pair, topic in wanted.items()
                         if self._visible(tx, pair[0], coll, record["id"], topic))

    def publish(self, org: str, events: list[Event]) -> None:
        """Called after a write commits: queue its events if anyone of the org listens."""
        if self.by_org.get(org):
            self._pending.put_nowait((org, events))

    async def run(self) -> None:
        """Deliver queued events in commit order until closed."""
        REQUEST_SCOPE.set(None)  # deliveries serve subscribers, not the request that started us
        while True:
            item = await self._pending.get()
            if item is None:
                return
            try:
                await self._deliver(*item)
            except Exception:  # noqa: BLE001 - one bad event must not stop delivery
                log.exception("realtime_delivery_failed", org=item[0])

    async def _deliver(self, org: str, events: list[Event]) -> None:
        per_identity: dict[Identity, list[Client]] = {}
        for event in events:
            for client in self._targets(org, event.collection, event.record["id"]):
                if client.identity is not None:
                    per_identity.setdefault(client.identity, []).append(client)
        for identity, clients in per_identity.items():
            frames = await self.store.read(org, identity, functools.partial(
                self._frames, identity=identity, clients=clients, events=events))
            for client, frame in frames:
                with contextlib.suppress(asyncio.QueueFull):
                    client.queue.put_nowait(frame)

    def _frames(self, tx: Tx, *, identity: Identity, clients: list[Client],
                events: list[Event]) -> list[tuple[Client, bytes]]:
        tx.context = "realtime"  # for the rules rendering applies (expansions' view rules)
        out = []
        for event in events:
            coll = tx.schema.by_id.get(event.collection.id, event.collection)
            rid = event.record["id"]
            for client in dict.fromkeys(clients):
                for topic in client.topics:
                    if not topic.matches(coll, rid):
                        continue
                    if event.allowed is None or (identity, topic.check) not in event.allowed:
                        continue
                    tx.request = topic.request()  # expansions' view rules read it too
                    record = self._payload(tx, coll, event.record, topic)
                    out.append((client, _frame(client.id, topic.key,
                                               {"action": event.action, "record": record})))
        return out

    def _visible(self, tx: Tx, identity: Identity, coll: Collection, record_id: str,
                 topic: Topic) -> bool:
        if coll.id not in tx.schema.tables:
            return False
        view = Tx(tx.conn, tx.org, identity, tx.schema, request=topic.request(),
                  context="realtime")
        extra = topic.filter
        try:
            cond = rule_filter(view, coll, "viewRule")
            more = compile_filter(tx.schema, coll, view.ctx(), extra) if extra else None
        except (PermissionDenied, InvalidArgument):
            return False
        if cond is None and more is None:
            return True
        table = tx.schema.table(coll)
        query = sa.select(1).select_from(table).where(table.c.id == record_id)
        for c in (cond, more):
            if c is not None:
                query = query.where(c)
        return tx.conn.execute(query).first() is not None

    def _payload(self, tx: Tx, coll: Collection, record: dict[str, Any],
                 topic: Topic) -> dict[str, Any]:
        identity = tx.identity
        data = dict(record)
        if not is_admin(identity):
            for f in coll.fields:
                if f.hidden:
                    data.pop(f.name, None)
        if topic.expand:
            expand_records(tx, coll, [data], topic.expand)
        return pick(data, topic.fields)  # type: ignore[no-any-return]
