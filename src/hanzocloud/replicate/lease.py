"""Single writer per database: epoch-numbered lease objects plus a heartbeat per replica.

A lease is `<org>/<service>/lease/<epoch>.age`, created only if absent (an exclusive link on
local disks, `If-None-Match: *` on S3, an exclusive open in memory; other backends fall back
to write-then-read-back). The highest epoch names the holder. A replica keeps one heartbeat
object (`replicas/<id>.age`, an expiry time) fresh instead of renewing every lease, so the cost
of holding many tenants is one write per heartbeat period. Another replica may take over a
lease (by creating the next epoch) only when the holder released it or its heartbeat expired.
Expiry compares wall clocks across replicas: keep them in sync (NTP).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from hanzocloud.replicate import objects
from hanzocloud.replicate.crypto import SinkKeys
from hanzocloud.replicate.errors import ChainError
from hanzocloud.replicate.sink import Sink


class LeaseHeld(Exception):
    """Another replica holds the lease (its id is in `holder`)."""

    def __init__(self, holder: str) -> None:
        super().__init__(f"lease held by replica {holder}")
        self.holder = holder


@dataclass(frozen=True, slots=True)
class Grant:
    """A lease just obtained; `previous` is the replica that held the epoch before (or None)."""

    epoch: int
    previous: str | None


class Leases:
    """The leases this replica holds, and how it takes, keeps and gives them up."""

    def __init__(self, sink: Sink, keys: SinkKeys, owner: str, *, ttl: float) -> None:
        self.sink, self.keys, self.ttl = sink, keys, ttl
        self.owner = owner
        self.id = hashlib.sha256(owner.encode()).hexdigest()[:16]
        self.held: dict[tuple[str, str], int] = {}
        self.alive_until = 0.0  # wall time until which our last heartbeat keeps us alive

    def _seal(self, kind: str, org: str, service: str, index: int, **extra: object) -> bytes:
        header = {"kind": kind, "org": objects.org_label(org), "service": service,
                  "generation": "", "index": index, "owner": self.id, **extra}
        return objects.seal_record(self.keys, header, b"")[0]

    def heartbeat(self) -> None:
        """Tell other replicas this one is alive for another `ttl` seconds."""
        expires = time.time() + self.ttl
        self.sink.put(f"replicas/{self.id}.age",
                      self._seal("heartbeat", "", "replicas", 0, expires=expires))
        self.alive_until = expires

    def _alive(self, replica: str) -> bool:
        key = f"replicas/{replica}.age"
        blob = self.sink.get(key)
        if blob is None:
            return False
        try:
            record = objects.open_record(self.keys, blob, where=key, kind="heartbeat")
        except ChainError:
            return False  # not ours (or from before a key rotation): it proves nothing
        return float(record.header.get("expires", 0)) > time.time()

    def _epochs(self, org: str, service: str) -> list[int]:
        names = self.sink.listdir(f"{objects.tenant_prefix(org, service)}/lease")
        return sorted(int(m[1], 16) for n in names if (m := objects.LEASE_RE.match(n)))

    def _key(self, org: str, service: str, epoch: int) -> str:
        return f"{objects.tenant_prefix(org, service)}/lease/{epoch:016x}.age"

    def acquire(self, org: str, service: str) -> Grant:
        """Take (or confirm) the lease; raises LeaseHeld if a live replica holds it."""
        epochs = self._epochs(org, service)
        previous: str | None = None
        if epochs:
            key = self._key(org, service, epochs[-1])
            blob = self.sink.get(key)
            try:
                record = None if blob is None else objects.open_record(
                    self.keys, blob, where=key, kind="lease", index=epochs[-1])
            except ChainError:
                record = None  # unreadable (forged, or sealed under an older master key)
            if record is not None:
                previous = str(record.header["owner"])
                released = bool(record.header.get("released"))
                if previous == self.id and not released:
                    self.held[(org, service)] = epochs[-1]
                    return Grant(epochs[-1], previous)
                if previous != self.id and not released and self._alive(previous):
                    raise LeaseHeld(previous)
        epoch = (epochs[-1] if epochs else 0) + 1
        if not self.sink.create(self._key(org, service, epoch),
                                self._seal("lease", org, service, epoch, released=False)):
            raise LeaseHeld("(contended)")
        self.held[(org, service)] = epoch
        stale = [self._key(org, service, e) for e in epochs[:-1]]
        self.sink.delete(stale)  # keep the previous epoch: it names who held it before
        return Grant(epoch, previous)

    def still_held(self, org: str, service: str) -> bool:
        """Whether no other replica has taken the lease since we got it."""
        epoch = self.held.get((org, service))
        return epoch is not None and self._epochs(org, service)[-1:] == [epoch]

    def release(self, org: str, service: str) -> None:
        """Give the lease up so another replica can take it at once."""
        epoch = self.held.get((org, service))
        if epoch is not None and self._epochs(org, service)[-1:] == [epoch]:
            self.sink.put(self._key(org, service, epoch),
                          self._seal("lease", org, service, epoch, released=True))
        self.held.pop((org, service), None)  # only once the sink has it (else retried)

    def forget(self, org: str, service: str) -> None:
        """Drop a lease from our books without touching the sink (it was taken from us)."""
        self.held.pop((org, service), None)
