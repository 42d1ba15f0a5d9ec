"""``deepaas-token``: create, list and revoke the server's API tokens, offline.

Works on the server's data directory directly, whether the server runs or not (a running
server reads the change back within a second)::

    deepaas-token create --name ci --scope models:predict --model iris --expires 30d
    deepaas-token list
    deepaas-token revoke 3f9a0c1b2d4e

``create`` prints the token once, as the last line of its output; only a keyed hash of
it is stored. The same is served to admins over HTTP at ``/v2/tokens``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
import time
from typing import Sequence

from ..auth.access import AccessTables
from ..auth.principal import check_user_id
from ..auth.tokens import TokenTable, audit_detail, check_scopes, issue_token, parse_duration, server_key
from ..database import Database
from ..errors import DeepaasError
from ..scopes import SCOPES
from ..settings import CONFIG_FILE_ENV, Settings, SettingsError, load_settings


def _server_options(parser: argparse.ArgumentParser, default: object = None) -> argparse.ArgumentParser:
    """Which server's store: before the command, or after it (``default``: SUPPRESS there, so
    that a value given before it is not reset)."""
    parser.add_argument(
        "--data-dir",
        default=default,
        help="the server's --data-dir (default: as deepaas-run "
        "would use it: its config file, DEEPAAS_DATA_DIR, ~/.local/share/deepaas_like)",
    )
    parser.add_argument(
        "--store",
        default=default,
        help="the server's --store (default: as deepaas-run would "
        "use it: its config file, DEEPAAS_STORE, else <data-dir>/state.sqlite3)",
    )
    parser.add_argument(
        "--auth-key-file",
        default=default,
        help="the server's --auth-key-file (default: as deepaas-run would use it, else <data-dir>/auth.key)",
    )
    parser.add_argument("--config-file", default=default, help=f"deepaas-run's config file (also ${CONFIG_FILE_ENV})")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _server_options(argparse.ArgumentParser(prog="deepaas-token", description=__doc__.split("\n\n")[0]))
    common = _server_options(argparse.ArgumentParser(add_help=False), default=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser(
        "create", parents=[common], help="create a token; it is printed once, as the last line"
    )
    create.add_argument("--name", required=True, help="what the token is for (shown in lists)")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=SCOPES,
        metavar="SCOPE",
        help=f"repeatable: {', '.join(SCOPES)}",
    )
    create.add_argument(
        "--model",
        action="append",
        metavar="NAME",
        help="limit the token to these models (repeatable); by default it reaches every model its scopes allow",
    )
    create.add_argument("--expires", metavar="DURATION", help="e.g. 30d, 12h, 90m, 2w (default: never)")
    create.add_argument("--user", metavar="USER_ID", help="the user the token acts for (owner of what it uploads)")
    commands.add_parser("list", parents=[common], help="list the tokens (never their secrets)")
    revoke = commands.add_parser("revoke", parents=[common], help="revoke a token: refused from the next request on")
    revoke.add_argument("id", help="the token's id (deepaas-token list)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.umask(0o077)  # a store or key it creates is the server's alone
    try:
        flags = [
            *(["--config-file", args.config_file] if args.config_file else []),
            *(["--data-dir", args.data_dir] if args.data_dir else []),
            *(["--store", args.store] if args.store else []),
            *(["--auth-key-file", args.auth_key_file] if args.auth_key_file else []),
        ]
        settings = load_settings(flags)
        expires_in = parse_duration(args.expires) if getattr(args, "expires", None) else None
    except (SettingsError, ValueError) as exc:
        print(f"deepaas-token: error: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, settings, expires_in))
    except DeepaasError as exc:
        print(f"deepaas-token: error: {exc.message}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace, settings: Settings, expires_in: float | None) -> int:
    db = Database(settings.data_dir, url=settings.store, exclusive=False)
    await db.open()
    try:
        table = TokenTable(db)
        audit = AccessTables(db)
        if args.command == "create":
            check_user_id(args.user)
            issued = issue_token(
                server_key(settings.auth_key_path),
                name=args.name,
                scopes=check_scopes(args.scope),
                models=args.model,
                user_id=args.user,
                expires_in=expires_in,
            )
            await table.insert(issued.record)
            record = issued.record
            await audit.record(_actor(), "token.create", record.id, audit_detail(record))
            print(
                f"created token {record.id} ({record.name}): scopes {', '.join(record.scopes)}"
                + (f"; models {', '.join(record.models)}" if record.models else "")
                + (
                    f"; expires {time.strftime('%Y-%m-%d %H:%M', time.localtime(record.expires))}"
                    if record.expires
                    else "; never expires"
                )
            )
            print("keep it now: it is not stored and cannot be shown again")
            print(issued.token)
            return 0
        if args.command == "list":
            now = time.time()
            for record in await table.load():
                state = record.usable(now) or "active"
                print(
                    f"{record.id}  {record.name:20}  {','.join(record.scopes):40}  "
                    f"{','.join(record.models or ['*']):20}  {state}"
                )
            return 0
        if not await table.revoke(args.id, time.time()):
            print(f"deepaas-token: error: no active token with id {args.id}", file=sys.stderr)
            return 1
        await audit.record(_actor(), "token.revoke", args.id, {})
        print(f"revoked token {args.id}")
        return 0
    finally:
        await db.close()


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in this environment
        return "cli"


if __name__ == "__main__":
    sys.exit(main())
