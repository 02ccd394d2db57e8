"""Which deployment the suite runs against: co-resident, or split over ZAP (CLOUD_TEST_SPLIT=1)."""

from __future__ import annotations

import os

from cloud import SPLIT, Cloud

from hanzocloud.identity import Identity, current_identity


async def test_clients_resolve_for_this_deployment(cloud: Cloud) -> None:
    assert cloud.host.deps.iam.mode == ("remote" if SPLIT else "local")
    # the split deployment always runs kms beside iam; co-resident, these tests leave it off
    assert cloud.host.deps.kms.mode == ("remote" if SPLIT else "disabled")
    assert cloud.host.deps.base.mode == "local"
    if SPLIT:  # iam and kms answer from another OS process
        assert cloud.peer is not None and cloud.peer.server.proc.pid != os.getpid()
        assert cloud.peer.names == ("iam", "kms")


async def test_a_cross_subsystem_call_works_either_way(cloud: Cloud) -> None:
    token = await cloud.token(org="acme", user="alice", roles=["owner"])
    current = current_identity.set(Identity(org="acme", user="alice", roles=("owner",)))
    try:
        claims = await cloud.host.deps.iam.verify_jwt(token)
    finally:
        current_identity.reset(current)
    assert claims.owner == "acme" and claims.sub
