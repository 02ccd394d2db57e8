"""Tenant storage (SPEC §6): one SQLCipher file per (org, service), opened lazily.

- `files`: the layout under the data dir, slug checks, atomic small-file writes;
- `sqlite`: one connection (raw key, pragmas, SQL functions), its time budget and errors;
- `walfiles`: keeping a database's `-wal` and `-shm` between opens;
- `handle`: an open database, its two ways in (sessions and `run_sync`);
- `store`: `TenantStore`, the bounded LRU of handles and its transactions.
"""

from hanzocloud.storage.files import (
    GLOBAL,
    GLOBAL_ORG,
    SERVICE_RE,
    SLUG_RE,
    validate_service,
    validate_slug,
    write_file_atomic,
)
from hanzocloud.storage.handle import THREAD_CONNECTIONS, StorageHooks, TenantHandle
from hanzocloud.storage.sqlite import (
    INTEGRITY_ERRORS,
    OPERATIONAL_ERRORS,
    SHORT_WAL_BYTES,
    Budget,
    connect_sqlcipher,
    interrupted,
    is_busy,
    wal_is_short,
)
from hanzocloud.storage.store import (
    MAX_PENDING_CLOSES,
    SQL_THREADS,
    THREAD_BACKLOG,
    TenantStore,
)

__all__ = [
    "GLOBAL", "GLOBAL_ORG", "INTEGRITY_ERRORS", "MAX_PENDING_CLOSES", "OPERATIONAL_ERRORS",
    "SERVICE_RE", "SHORT_WAL_BYTES", "SLUG_RE", "SQL_THREADS", "THREAD_BACKLOG",
    "THREAD_CONNECTIONS", "Budget", "StorageHooks", "TenantHandle", "TenantStore",
    "connect_sqlcipher", "interrupted", "is_busy", "validate_service", "validate_slug",
    "wal_is_short", "write_file_atomic",
]
