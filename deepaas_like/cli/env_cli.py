"""``deepaas-env``: the environments that models with their own requirements run in.

Works on the server's environment directory directly, whether the server runs or not::

    deepaas-env list
    deepaas-env show 3f9a0c1b2d4e        # a unique prefix of the key is enough
    deepaas-env remove 3f9a0c1b2d4e
    deepaas-env gc                       # removes the environments no model uses

The directory is ``<data-dir>/environments`` (with replicas, in the shared artifact
directory), as deepaas-run finds it from its flags, environment and config file; or
``--root DIR``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from ..environments import Environment, EnvironmentStore, environments_root, in_use, users
from ..settings import CONFIG_FILE_ENV, SettingsError, load_settings

GC_GRACE = 600.0


class Refused(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepaas-env", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", help="the environments' directory itself (instead of --data-dir)")
    parser.add_argument(
        "--data-dir",
        help="the server's --data-dir (default: as deepaas-run would use it: its config file, "
        "DEEPAAS_DATA_DIR, ~/.local/share/deepaas_like)",
    )
    parser.add_argument("--config-file", help=f"deepaas-run's config file (also ${CONFIG_FILE_ENV})")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the environments, oldest first")
    show = commands.add_parser("show", help="one environment's record and lock")
    show.add_argument("key", help="its key, or a unique prefix of it (deepaas-env list)")
    remove = commands.add_parser("remove", help="remove an environment")
    remove.add_argument("key", help="its key, or a unique prefix of it (deepaas-env list)")
    remove.add_argument("--force", action="store_true", help="remove it even when a model uses it")
    gc = commands.add_parser("gc", help="remove the environments no model uses")
    gc.add_argument(
        "--grace",
        type=float,
        default=GC_GRACE,
        metavar="SECONDS",
        help=f"keep those built or reused in the last SECONDS: a model may be about to use them (default {GC_GRACE:g})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.root and (args.data_dir or args.config_file):
        parser.error("--root names the directory itself: leave out --data-dir and --config-file")
    try:
        root = Path(args.root) if args.root else environments_root(load_settings(_settings_flags(args)))
    except SettingsError as exc:
        parser.error(str(exc))
    store = EnvironmentStore(root)
    try:
        return _run(args, store)
    except (Refused, ValueError, OSError) as exc:
        print(f"deepaas-env: error: {exc}", file=sys.stderr)
        return 1


def _settings_flags(args: argparse.Namespace) -> list[str]:
    return [
        *(["--config-file", args.config_file] if args.config_file else []),
        *(["--data-dir", args.data_dir] if args.data_dir else []),
    ]


def _run(args: argparse.Namespace, store: EnvironmentStore) -> int:
    if args.command == "list":
        _print_list(store)
    elif args.command == "show":
        env = find(store, args.key)
        record = {"path": str(env.path), **env.record(), "used_by": _users_of(store.root, env.key)}
        del record["lock"]
        print(json.dumps(record, indent=2))
        print(f"\n# lock\n{env.lock}", end="")
    elif args.command == "remove":
        env = find(store, args.key)
        using = _users_of(store.root, env.key)
        if using and not args.force:
            raise Refused(
                f"environment {env.key[:12]} is used by {', '.join(using)}: remove those models first, or pass --force"
            )
        store.remove(env.key)
        print(f"removed environment {env.key[:12]} ({_mib(env.size)} MiB)")
    else:
        removed = store.collect(in_use(store.root), grace=args.grace)
        for key in removed:
            print(f"removed environment {key[:12]}")
        print(f"{len(removed)} environment(s) removed, {len(store.list())} kept")
    return 0


def find(store: EnvironmentStore, prefix: str) -> Environment:
    """The one environment whose key starts with ``prefix``; Refused when none or several do."""
    matches = [env for env in store.list() if env.key.startswith(prefix.lower())] if prefix else []
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise Refused(f"no environment with key {prefix!r} in {store.root} (deepaas-env list shows them)")
    raise Refused(f"key {prefix!r} is the start of {len(matches)} environments' keys: give more of it")


def _print_list(store: EnvironmentStore) -> None:
    found = store.list()
    if not found:
        print(f"no environments in {store.root}")
        return
    counts: dict[str, int] = {}
    for record in users(store.root).values():
        counts[record["environment"]] = counts.get(record["environment"], 0) + 1
    print(f"{'KEY':12}  {'PYTHON':6}  {'MiB':>8}  {'CREATED':16}  {'USERS':>5}  REQUIREMENTS")
    for env in found:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(env.created))
        print(
            f"{env.key[:12]}  {env.python_version:6}  {_mib(env.size):>8}  {created:16}  "
            f"{counts.get(env.key, 0):>5}  {_summary(env.requirements)}"
        )


def _summary(requirements: Sequence[str], most: int = 3) -> str:
    shown = ", ".join(requirements[:most])
    return shown + (f" (+{len(requirements) - most} more)" if len(requirements) > most else "")


def _users_of(root: Path, key: str) -> list[str]:
    return [user for user, record in users(root).items() if record["environment"] == key]


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f}"


if __name__ == "__main__":
    sys.exit(main())
