"""`hanzocloud iam …`: bootstrap an org, rotate signing keys, print the dev demo login.

These run against the data dir directly (SQLCipher in WAL mode admits a running server), so
they work while the server runs; a server picks up rotated keys within its reload interval.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import secrets
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from hanzocloud.config import OPTIONS, Settings, load_settings
from hanzocloud.errors import CloudError, ConfigError

DEMO_ORG = "demo"
DEMO_EMAIL = "admin@demo.localhost"
DEMO_FILE = "dev-demo-login.json"


def build_parser(add_globals: Callable[..., None], parser_class: type) -> argparse.ArgumentParser:
    """The `iam` command's own parser (each action also takes the global flags)."""
    parser: argparse.ArgumentParser = parser_class(prog="hanzocloud iam",
                                                   description="iam operations")
    add_globals(parser, top=False)
    sub: Any = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=parser_class,
                                required=True)
    boot = sub.add_parser("bootstrap", help="create an org, its admin and its first-party app")
    add_globals(boot, top=False)
    boot.add_argument("--org", required=True, help="the org slug")
    boot.add_argument("--email", required=True, help="the admin's email")
    boot.add_argument("--display-name", default="", help="the org's display name")
    secret = boot.add_mutually_exclusive_group(required=True)
    secret.add_argument("--password-file", metavar="FILE", help="file holding the password")
    secret.add_argument("--password", metavar="P", help="the password (visible in ps; "
                        "prefer --password-file)")
    boot.add_argument("--platform-admin", action="store_true",
                      help="make this admin the platform admin (manages orgs)")
    boot.add_argument("--json", action="store_true",
                      help='print {"org", "user_id", "client_id"} as JSON')
    rotate = sub.add_parser("rotate-keys", help="rotate the token signing key now")
    add_globals(rotate, top=False)
    rotate.add_argument("--alg", choices=["RS256", "ES256", "EdDSA"], default=None,
                        help="algorithm of the new key (default: CLOUD_IAM_ALG or RS256)")
    demo = sub.add_parser("demo", help="(--dev only) create the demo org once; print its login")
    add_globals(demo, top=False)
    return parser


def _settings(top: argparse.Namespace, ns: argparse.Namespace) -> Settings:
    flags = {n: getattr(ns, n, None) if getattr(ns, n, None) is not None else
             getattr(top, n, None) for n in OPTIONS}
    config = getattr(ns, "config", None) or getattr(top, "config", None)
    settings = load_settings(flags, config_file=Path(config) if config else None)
    return dataclasses.replace(settings, enabled=("iam",))


async def _with_iam(settings: Settings, job: Callable[[Any], Awaitable[int]]) -> int:
    from hanzocloud.host import build_host

    host = build_host(settings)
    try:
        return await job(host.deps.iam.target)
    finally:
        await host.deps.tenants.close()


def _password(ns: argparse.Namespace) -> str:
    if ns.password is not None:
        return str(ns.password)
    try:
        return Path(ns.password_file).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"--password-file: cannot read {ns.password_file}: "
                          f"{exc.strerror}") from None


def main(top: argparse.Namespace, rest: list[str], *, add_globals: Callable[..., None],
         parser_class: type) -> int:
    """Run one `hanzocloud iam` action; returns the exit status."""
    ns = build_parser(add_globals, parser_class).parse_args(rest)
    settings = _settings(top, ns)

    async def bootstrap(iam: Any) -> int:
        made = await iam.bootstrap(ns.org, email=ns.email, password=_password(ns),
                                   platform_admin=ns.platform_admin,
                                   display_name=ns.display_name)
        if ns.json:
            print(json.dumps(made))
        else:
            print(f"hanzocloud: org {made['org']} created; admin {ns.email} "
                  f"(user {made['user_id']}); first-party client_id {made['client_id']}")
        return 0

    async def rotate(iam: Any) -> int:
        await iam.keys.load()
        key = await iam.keys.rotate(ns.alg)
        print(f"hanzocloud: new signing key {key.kid} ({key.alg}); the previous key stays "
              f"published for {iam.keys.max_token_life} s")
        return 0

    async def demo(iam: Any) -> int:
        if not settings.dev:
            raise ConfigError("iam demo is for --dev only")
        path = settings.data_dir / DEMO_FILE
        if not await iam.directory.org_exists(DEMO_ORG):
            password = secrets.token_urlsafe(12)
            made = await iam.bootstrap(DEMO_ORG, email=DEMO_EMAIL, password=password,
                                       platform_admin=True, display_name="Demo")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump({**made, "email": DEMO_EMAIL, "password": password}, fh)
        try:
            login = json.loads(path.read_text())
        except (OSError, ValueError):
            print(f"hanzocloud: demo org '{DEMO_ORG}' exists, but its login file {path} is gone")
            return 0
        print(f"hanzocloud: demo login — org {login['org']}, email {login['email']}, "
              f"password {login['password']}, client_id {login['client_id']}")
        return 0

    jobs = {"bootstrap": bootstrap, "rotate-keys": rotate, "demo": demo}
    try:
        return asyncio.run(_with_iam(settings, jobs[ns.action]))
    except CloudError as exc:
        print(f"hanzocloud: error: {exc.message}", file=sys.stderr)
        return 2
