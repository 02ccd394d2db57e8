"""The `hanzocloud` command: serve (the default) and the operator subcommands.

Every subcommand accepts the server's global flags before or after its name. A bad
configuration is one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from hanzocloud import __version__
from hanzocloud.config import OPTIONS, Settings, load_settings
from hanzocloud.errors import CloudError, ConfigError

DEV_WARNING = (
    "hanzocloud: WARNING: --dev is on. The master key is a development key stored in clear at "
    "{path}. Never use --dev for real data."
)

_HELP = {
    "enable": "comma list of subsystems to mount here ('all' or empty: every one)",
    "brand": "built-in brand: hanzo, osage, lux, zoo",
    "brand_file": "a custom brand definition (TOML)",
    "domain": "the public domain of this deployment",
    "iam_issuer": "OIDC issuer to trust (default: this process's own iam)",
    "kms_master_key_ref": "master key: env:VAR, file:PATH or kms://<deployment>/<org>/<purpose>",
    "data_dir": "where tenant databases live",
    "listen": "public HTTP listener",
    "zap_listen": "ZAP RPC listener",
    "health_listen": "health and metrics listener",
    "admin_listen": "admin listener (platform admins only)",
    "dev": "development mode: create a local master key in the data dir",
    "body_limit": "largest request body accepted, in bytes",
    "header_limit": "largest request line and headers accepted, in bytes (beyond: 431)",
    "header_timeout": "seconds a client has to send a request's line and headers (then 408), "
                      "and the longest a request body may pause",
    "trusted_proxies": "reverse proxies (comma list of IPs and CIDR networks) whose "
                       "X-Forwarded-For and X-Forwarded-Proto name the client; default: none",
    "shutdown_timeout": "seconds to drain in-flight requests on SIGTERM",
    "tenant_cache_size": "most tenant databases kept open at once",
    "tenant_idle_seconds": "close a tenant database after this many idle seconds",
    "tenant_read_budget_ms": "a read that holds the event loop longer than this moves to a "
                             "worker thread (0: never)",
    "tenant_write_budget_ms": "a base record write that holds the event loop longer than this "
                              "is rolled back and runs again in a worker thread (0: never)",
    "replicate_url": "stream every database to this fsspec URL (file://, s3://, memory://); "
                     "--dev defaults to file://<data dir>/replicate-sink",
    "replicate_wal_hours": "keep shipped WAL for point-in-time restores this many hours",
    "replicate_snapshot_days": "keep replication snapshots this many days",
    "replicate_lease_seconds": "a dead replica's tenant leases expire after this many seconds",
    "log_level": "debug, info, warning or error",
    "ext_dir": "operator extensions: module folders plus routes.toml",
    "ext_capabilities": "capabilities extensions may use (comma list: http, kv)",
    "ext_http_allow": "hosts an extension's http_fetch may reach (comma list)",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"hanzocloud: error: {message} (see --help)\n")


def _add_globals(parser: argparse.ArgumentParser, *, top: bool) -> None:
    default = None if top else argparse.SUPPRESS
    for name, (var, dflt, kind) in OPTIONS.items():
        flag = f"--{name.replace('_', '-')}"
        help_text = f"{_HELP[name]} [{var}; default {dflt}]"
        if kind == "bool":
            parser.add_argument(flag, action="store_true", default=default, help=help_text)
        else:
            parser.add_argument(flag, default=default, metavar=name.upper(), help=help_text)
    parser.add_argument("--config", default=default, metavar="FILE",
                        help="optional TOML file of settings (flags and env win)")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: global flags plus subcommands."""
    parser = _Parser(prog="hanzocloud", description="One process that hosts a whole "
                     "white-label cloud. With no subcommand, serves.")
    parser.add_argument("--version", action="version", version=f"hanzocloud {__version__}")
    _add_globals(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    serve = sub.add_parser("serve", help="serve the enabled subsystems (the default)")
    _add_globals(serve, top=False)

    keys = sub.add_parser("keys", help="master key operations")
    _add_globals(keys, top=False)
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", parser_class=_Parser,
                                   required=True)
    rotate = keys_sub.add_parser("rotate-master", help="rewrap every tenant key under a new "
                                 "master key (crash-safe, resumable)")
    _add_globals(rotate, top=False)
    rotate.add_argument("--new-key-ref", required=True, metavar="REF",
                        help="the new master key: env:VAR or file:PATH")

    # Durability replicator (hanzocloud.replicate): restore a database from the sink.
    replicate = sub.add_parser("replicate", help="durability replication: restore")
    _add_globals(replicate, top=False)
    replicate_sub = replicate.add_subparsers(dest="replicate_command", metavar="ACTION",
                                             parser_class=_Parser, required=True)
    restore = replicate_sub.add_parser("restore", help="restore one database from the "
                                       "replication sink, optionally as of a moment")
    _add_globals(restore, top=False)
    restore.add_argument("--org", required=True, help="org slug (_global: platform-wide)")
    restore.add_argument("--service", required=True, help="service name, e.g. iam")
    restore.add_argument("--to", metavar="TIMESTAMP",
                         help="restore the state of this moment (ISO 8601 or unix seconds)")
    restore.add_argument("--output", metavar="PATH", help="write the file here, not the data dir")
    restore.add_argument("--force", action="store_true",
                         help="replace an existing local file (kept aside as .superseded-…)")

    iam = sub.add_parser("iam", help="iam: bootstrap | rotate-keys | demo", add_help=False)
    _add_globals(iam, top=False)
    iam.add_argument("rest", nargs=argparse.REMAINDER)

    zapc = sub.add_parser("zapc", help="ZAP schema compiler: generate | check | fmt",
                          add_help=False)
    zapc.add_argument("rest", nargs=argparse.REMAINDER)
    ext = sub.add_parser("ext", help="per-org WebAssembly extensions: install | list | remove",
                         add_help=False)
    _add_globals(ext, top=False)
    ext.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    flags = {name: getattr(args, name, None) for name in OPTIONS}
    config = getattr(args, "config", None)
    return load_settings(flags, config_file=Path(config) if config else None)


def _serve(args: argparse.Namespace) -> int:
    from hanzocloud import logging as cloud_logging
    from hanzocloud.host import build_host
    from hanzocloud.keys import DEV_KEY_FILE
    from hanzocloud.replicate import with_dev_sink
    from hanzocloud.server import serve

    settings = with_dev_sink(_settings(args))  # --dev replicates under the data dir
    cloud_logging.configure(settings.log_level)
    try:
        host = build_host(settings)
        if settings.dev and not settings.kms_master_key_ref:
            # With the listener addresses on stdout, and on stderr with the logs, unless the
            # two are one file (a terminal, `2>&1`): there it is said once.
            warning = DEV_WARNING.format(path=settings.data_dir / DEV_KEY_FILE)
            print(warning, flush=True)
            if not _one_file(sys.stdout, sys.stderr):
                print(warning, file=sys.stderr, flush=True)
        return _run(serve(host))
    except CloudError as exc:
        # The host's own errors while mounting or starting (a damaged key sidecar, a
        # dependency that will not come up) are bad state, not bugs: one line, status 2.
        # Anything else (a TypeError, say) is a bug and keeps its traceback.
        raise ConfigError(_startup_failure(exc, settings.data_dir)) from None


def _startup_failure(exc: CloudError, data_dir: Path) -> str:
    """The one-line message for a CloudError that stopped the server; never key material."""
    from hanzocloud.keys import KeyUnwrapError

    if isinstance(exc, KeyUnwrapError):
        # `reason` names a path or the master key's fingerprint, never key bytes; the
        # key_unwrap_failed log line just before names the sidecar file.
        return (f"a database key under {data_dir} does not open ({exc.reason}); the "
                "key_unwrap_failed log line names its sidecar: restore that file from a "
                "backup, or pass the master key it was made with")
    return f"{exc.code}: {exc.message}"


def _one_file(a: Any, b: Any) -> bool:
    """Whether two streams write to the same open file."""
    try:
        first, second = os.fstat(a.fileno()), os.fstat(b.fileno())
    except (AttributeError, OSError, ValueError):  # not backed by a descriptor
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def _run(coro: Any) -> int:
    try:
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return int(runner.run(coro))
    except ImportError:
        return int(asyncio.run(coro))


def _rotate(args: argparse.Namespace) -> int:
    from hanzocloud import logging as cloud_logging
    from hanzocloud.host import load_master
    from hanzocloud.keys import resolve_master_key
    from hanzocloud.rotate import rotate_master

    settings = _settings(args)
    cloud_logging.configure(settings.log_level)
    old, _ = load_master(settings)
    new = resolve_master_key(args.new_key_ref)
    report = rotate_master(settings.data_dir, old, new, after_each=_failpoint("rotate-master"))
    print(f"hanzocloud: rewrapped {report.rewrapped} key(s), {report.already} already on the new "
          f"key; data dir now uses master key {new.fingerprint}. Restart with "
          f"--kms-master-key-ref={args.new_key_ref}")
    return 0


def _globals_from(args: argparse.Namespace, rest: list[str]) -> list[str]:
    """Pull global flags out of a pass-through argument list into `args`; return the rest."""
    parser = _Parser(add_help=False)
    _add_globals(parser, top=False)
    found, remaining = parser.parse_known_args(rest)
    for name, value in vars(found).items():
        setattr(args, name, value)
    return remaining


def _ext(args: argparse.Namespace) -> int:
    from hanzocloud.ext.cli import cli_main

    rest = _globals_from(args, list(args.rest))
    data_dir = getattr(args, "data_dir", None) or os.environ.get("CLOUD_DATA_DIR") or "./data"
    return cli_main(rest, data_dir=Path(data_dir))


def _failpoint(name: str) -> Callable[[Path], None] | None:
    """Fault injection for crash tests: CLOUD_FAILPOINT=<name>:<n> exits hard after n steps."""
    spec = os.environ.get("CLOUD_FAILPOINT", "")
    if not spec.startswith(name + ":"):
        return None
    remaining = [int(spec.split(":", 1)[1])]

    def step(_: Path) -> None:
        remaining[0] -= 1
        if remaining[0] <= 0:
            os._exit(70)

    return step


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `hanzocloud` console script."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    command = args.command or "serve"
    if command in ("zapc", "ext"):
        args.rest = [*unknown, *args.rest]
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        if command == "serve":
            return _serve(args)
        if command == "keys":
            return _rotate(args)
        if command == "zapc":
            from hanzocloud.zap.cli import find_root, run

            return run(list(args.rest), root=find_root(Path.cwd()))
        if command == "ext":
            return _ext(args)
        if command == "replicate":
            from hanzocloud.replicate.cli import run_restore

            return run_restore(_settings(args), args)
        if command == "iam":
            from subsystems.iam.cli import main as iam_main

            return iam_main(args, list(args.rest), add_globals=_add_globals,
                            parser_class=_Parser)
        raise ConfigError(f"unknown command {command}")
    except (ConfigError, OSError) as exc:
        # One line even when the message quotes a value with a newline in it.
        print(f"hanzocloud: error: {' '.join(str(exc).splitlines())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def run_alone(name: str) -> None:
    """`python -m subsystems.<name>`: serve one subsystem (plus the edge) through its mount."""
    from hanzocloud.registry import SUBSYSTEMS

    names = [name] + [s.name for s in SUBSYSTEMS if s.edge and s.name != name]
    sys.exit(main([*sys.argv[1:], f"--enable={','.join(names)}"]))
