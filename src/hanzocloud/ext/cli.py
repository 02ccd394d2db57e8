"""`hanzocloud ext install|list|remove`: manage an org's extensions from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from hanzocloud.errors import CloudError, InvalidArgument
from hanzocloud.ext.store import ModuleStore

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hanzocloud ext",
                                     description="Manage an org's WebAssembly extensions.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    install = sub.add_parser("install", help="validate and install an extension directory")
    install.add_argument("--org", required=True, help="org slug")
    install.add_argument("--replace", action="store_true", help="overwrite the same version")
    install.add_argument("directory", type=Path, help="directory holding extension.json")
    listing = sub.add_parser("list", help="list an org's extensions")
    listing.add_argument("--org", required=True, help="org slug")
    listing.add_argument("--json", action="store_true", help="print JSON lines")
    remove = sub.add_parser("remove", help="remove an extension (all versions by default)")
    remove.add_argument("--org", required=True, help="org slug")
    remove.add_argument("--version", help="remove only this version")
    remove.add_argument("name", help="extension name")
    return parser


def cli_main(argv: list[str], *, data_dir: Path, stdout: TextIO | None = None,
             stderr: TextIO | None = None) -> int:
    """Run `hanzocloud ext …` (argv after `ext`); return the process exit status."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    if argv[:1] == ["ext"]:
        argv = argv[1:]
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage line
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    store = ModuleStore(data_dir)
    try:
        if args.command == "install":
            item = store.install(args.org, args.directory, replace=args.replace)
            print(f"installed {item.ref} for org {args.org} ({item.sha256[:12]})", file=out)
        elif args.command == "list":
            for item in store.list(args.org):
                m = item.manifest
                if args.json:
                    print(json.dumps({"name": m.name, "version": m.version,
                                      "exports": list(m.exports),
                                      "capabilities": list(m.capabilities),
                                      "sha256": item.sha256}), file=out)
                else:
                    caps = ",".join(m.capabilities) or "-"
                    print(f"{m.name}\t{m.version}\t{','.join(m.exports)}\t{caps}\t"
                          f"{item.sha256[:12]}", file=out)
        else:
            for item in store.delete(args.org, args.name, args.version):
                print(f"removed {item.ref} from org {args.org}", file=out)
    except InvalidArgument as exc:
        print(f"hanzocloud ext: error: {exc.message}", file=err)
        return EXIT_USAGE
    except CloudError as exc:
        print(f"hanzocloud ext: error: {exc.message}", file=err)
        return EXIT_FAILED
    return EXIT_OK
