"""``deepaas-cli``: a model's predict, train and get_metadata from the command line.

The flags of ``predict`` and ``train`` are built from the model's own argument
declarations (types, defaults, choices, required, descriptions; lists repeat, files are
paths, booleans are ``--flag/--no-flag``)::

    deepaas-cli --model-name demo predict --values 1 --values 2 --bins 3 --normalize
    deepaas-cli --model-name demo predict --accept image/png --output histogram.png
    deepaas-cli --model-name demo train --epochs 5
    deepaas-cli --model-name demo predict --help
    deepaas-cli --model-name irisbench test --data rows.csv      # model tests, for a plugin's CI

By default the plugin runs in this process, as a server's worker runs it (one ``warm()``,
the server's validation, ``storage_dir()`` in deepaas-run's ``--data-dir``). With
``--url URL [--token T]`` the same commands call a running server instead; the flags then
come from its ``/swagger.json``, and ``train`` follows the training with a progress bar
and prints its log at the end.

Output: JSON on stdout (``predict``: what the model returned, as DEEPaaS's deepaas-cli
printed it, without the server's ``{"status", "predictions"}`` envelope; ``train``: the
training's document; ``get_metadata``: the metadata), or into ``--output FILE``
(``--deepaas_method_output``, DEEPaaS's name), binary results too. What the model prints,
progress and logs go to stderr. Exit status: 0 done, 1 the model or the server failed,
2 a usage or validation error.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from typing import Any, Sequence

from ..environments import environments_root
from ..errors import PluginLoadError
from ..isolated import registered
from ..jsonutil import dumps
from ..loading import GROUP, discover_entry_points, load_plugins
from ..settings import CONFIG_FILE_ENV, SettingsError, load_settings
from .arguments_cli import ArgumentFlag, add_flags, collect
from .checks_cli import SUMMARY as TEST_SUMMARY
from .checks_cli import add_test_arguments, run_test_command
from .explain_cli import SUMMARY as EXPLAIN_SUMMARY
from .explain_cli import add_explain_arguments, run_explain_command
from .models_cli import CommandFailed, LocalModel, ModelOutput, TrainingReport, plugin_output_to
from .progress_cli import ProgressBar
from .remote_cli import RemoteModel, ServedModels, ServerClient

PROG = "deepaas-cli"
TOKEN_ENV = "DEEPAAS_TOKEN"
COMMANDS = {
    "get_metadata": "print the model's metadata (JSON)",
    "predict": "run predict() with the model's arguments ('predict --help' lists them)",
    "train": "run train() with the model's arguments and print the training's document ('train --help' lists them)",
    "warm": "run warm() in this process (for example to fetch a model's weights ahead of time)",
    "test": TEST_SUMMARY,
    "explain": EXPLAIN_SUMMARY,
}
OUTPUT_OPTIONS = ("-o", "--output", "--deepaas_method_output")
# Global options that take a value: what comes before the command word.
VALUE_OPTIONS = {"--model-name", "--url", "--token", "--data-dir", "--config-file", *OUTPUT_OPTIONS}
Model = LocalModel | RemoteModel


def global_parser(add_help: bool = True, epilog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        add_help=add_help,
        allow_abbrev=False,
        epilog=epilog,
        description="Run a DEEPaaS model's methods from the command line: in this process, "
        "or on a running server with --url.",
        usage=f"{PROG} [--model-name NAME] [--url URL [--token T]] [--output FILE] "
        "{get_metadata,predict,train,warm,test,explain} [--ARGUMENT VALUE ...]",
    )
    parser.add_argument(
        "--model-name",
        metavar="NAME",
        help="the model: a plugin's name (entry-point group 'deepaas.v2.model'), or a model "
        "the server serves; optional when there is only one",
    )
    parser.add_argument(
        *OUTPUT_OPTIONS,
        dest="output",
        metavar="FILE",
        help="write the result into FILE instead of stdout (binary results too)",
    )
    remote = parser.add_argument_group("on a running server")
    remote.add_argument("--url", help="the server's address (with its --base-path), e.g. http://127.0.0.1:5000")
    remote.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV) or None,
        help=f"API token for a server run with --auth (default: ${TOKEN_ENV})",
    )
    local = parser.add_argument_group("in this process")
    local.add_argument(
        "--data-dir",
        help="deepaas-run's --data-dir: the models' storage_dir() lies in it (default: "
        "as deepaas-run would use it: its config file, DEEPAAS_DATA_DIR, "
        "~/.local/share/deepaas_like)",
    )
    local.add_argument("--config-file", help=f"deepaas-run's config file (also ${CONFIG_FILE_ENV})")
    local.add_argument(
        "--no-warm",
        dest="warm",
        action="store_false",
        default=None,
        help="do not run warm() before predict, train and get_metadata",
    )
    return parser


def build_parser(model: Model | None, epilog: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; each command's flags are ``model``'s declared arguments."""
    parser = global_parser(epilog=epilog)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", prog=f"{PROG} [options]")
    for name, summary in COMMANDS.items():
        flags = _flags(model, name)
        can = model is None or name not in ("predict", "train", "explain") or model.can(_method(name))
        sub = commands.add_parser(
            name,
            help=summary if can else f"{summary} [not available for this model]",
            description=(f"{summary[0].upper()}{summary[1:]}" + (f"; model: {model.name}." if model else ".")),
            allow_abbrev=False,
            conflict_handler="resolve",
        )
        sub.add_argument(
            *OUTPUT_OPTIONS,
            dest="output",
            metavar="FILE",
            default=argparse.SUPPRESS,
            help="write the result into FILE instead of stdout",
        )
        if flags:
            add_flags(sub.add_argument_group(f"arguments of {model.name if model else 'the model'}"), flags)
        if name == "test":
            add_test_arguments(sub)
        if name == "explain":
            add_explain_arguments(sub)
    return parser


def _method(command: str) -> str:
    """The model's method a command runs (explain explains predictions)."""
    return "predict" if command == "explain" else command


def _flags(model: Model | None, command: str) -> list[ArgumentFlag]:
    if model is None:
        return []
    return {"predict": model.predict_flags, "train": model.train_flags}.get(_method(command), [])


def main(argv: Sequence[str] | None = None) -> int:
    argv = _globals_first(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    position = _command_position(argv)
    known, _ = global_parser(add_help=False).parse_known_args(argv[:position])
    model: Model | None = None
    try:
        asks_help = any(arg in ("-h", "--help") for arg in argv[:position])
        if position is None or argv[position] not in COMMANDS or asks_help:  # help, or argparse's own error
            build_parser(None, _installed_epilog(known)).parse_args(argv)
        model = open_model(known)
        args = build_parser(model).parse_args(argv)
        return run(model, args)
    except CommandFailed as exc:
        if exc.detail:
            print(exc.detail.rstrip(), file=sys.stderr)
        print(f"{PROG}: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    finally:
        if model is not None:
            model.close()


def _globals_first(argv: list[str]) -> list[str]:
    """The global options given after the command (``deepaas-cli predict --model-name x``)
    moved before it, where the rest of the parsing expects them."""
    position = _command_position(argv)
    if position is None or argv[position] not in COMMANDS:
        return argv
    head, command, tail = argv[:position], argv[position], argv[position + 1 :]
    _, rest = global_parser(add_help=False).parse_known_args(tail)
    moved, kept, pending = [], [], list(rest)
    for token in tail:  # what the global parser took from the tail, in order
        if pending and token == pending[0]:
            kept.append(pending.pop(0))
        else:
            moved.append(token)
    return [*head, *moved, command, *kept]


def _command_position(argv: Sequence[str]) -> int | None:
    """Where the command word is: the first argument that is neither an option nor its value."""
    index = 0
    while index < len(argv):
        token = argv[index]
        if token == "--":
            return index + 1 if index + 1 < len(argv) else None
        if not token.startswith("-") or token == "-":
            return index
        index += 2 if token in VALUE_OPTIONS else 1
    return None


def _installed_epilog(known: argparse.Namespace) -> str | None:
    if known.url:
        return None
    names = sorted({ep.name for ep in discover_entry_points()})
    return f"installed models: {', '.join(names) or 'none'}"


def open_model(known: argparse.Namespace) -> Model:
    """The model the command runs: a plugin loaded here, or one the server at --url serves."""
    if known.url:
        served = ServedModels(ServerClient(known.url, known.token))
        return served.model(_choose(known.model_name, served.names, f"served by {known.url}"))
    flags = [
        *(["--data-dir", known.data_dir] if known.data_dir else []),
        *(["--config-file", known.config_file] if known.config_file else []),
        *(["--no-warm"] if known.warm is False else []),
    ]
    try:
        settings = load_settings(flags)
    except SettingsError as exc:
        raise CommandFailed(f"deepaas-run's settings: {exc}", 2) from None
    names = sorted({ep.name for ep in discover_entry_points()})
    preferred = known.model_name or (settings.model_name[0] if len(settings.model_name) == 1 else None)
    if preferred is not None and preferred not in names and preferred in registered(environments_root(settings)):
        raise CommandFailed(
            f"model '{preferred}' is installed in an environment of its own: it runs in its workers, not in "
            "this process; run it on a server with --url (deepaas-run serves it)",
            2,
        )
    name = _choose(preferred, names, "installed")
    try:
        with plugin_output_to(sys.stderr):  # what a plugin prints on import is not the result
            return LocalModel(load_plugins([name])[0], settings)
    except PluginLoadError as exc:
        raise CommandFailed(str(exc), 1, exc.traceback_text) from None


def _choose(name: str | None, names: Sequence[str], where: str) -> str:
    """``name``, or the only model there is; ``where``: "installed" or "served by URL"."""
    if name is not None:
        if name not in names:
            raise CommandFailed(f"no model '{name}' is {where} ({where.split()[0]}: {', '.join(names) or 'none'})", 2)
        return name
    if len(names) == 1:
        return names[0]
    if not names:
        raise CommandFailed(f"no model is {where} (plugins: entry-point group '{GROUP}')", 1)
    raise CommandFailed(
        f"several models are {where}: {', '.join(names)}; choose one with --model-name NAME (before the command)", 2
    )


def run(model: Model, args: argparse.Namespace) -> int:
    """Run the parsed command; its result goes to stdout or --output."""
    command, output = args.command, args.output
    if command == "warm":
        model.warm(force=True)
        return 0
    if command == "get_metadata":
        write(ModelOutput(json=model.metadata()), output)
        return 0
    if command == "test":
        return run_test_command(model, args)
    values, files = collect(args, _flags(model, command))
    if command == "predict":
        write(model.predict(values, files), output)
        return 0
    if command == "explain":
        write(run_explain_command(model, args, values), output)
        return 0
    bar = ProgressBar(sys.stderr)
    try:
        report = model.train(values, files, bar.update, log=bar.stream)
    finally:
        bar.close()
    return show_training(report, output)


def show_training(report: TrainingReport, output: str | None) -> int:
    """The log (from a server) on stderr, then the training's document; 1 unless it is done."""
    if report.log:
        sys.stderr.write(report.log if report.log.endswith("\n") else report.log + "\n")
        sys.stderr.flush()
    write(ModelOutput(json=report.document), output)
    if not report.ok:
        status, message = report.document.get("status"), report.document.get("message")
        print(f"{PROG}: error: the training ended {status}" + (f": {message}" if message else ""), file=sys.stderr)
        return 1
    return 0


def write(result: ModelOutput, output: str | None) -> None:
    """JSON as text, binary as bytes, into ``output`` or stdout (never binary to a terminal)."""
    if not result.is_binary:
        try:
            result = ModelOutput(data=dumps(result.json).encode() + b"\n", content_type="JSON")
        except TypeError as exc:
            raise CommandFailed(f"the result cannot be encoded as JSON ({exc})") from None
    elif output is None and sys.stdout.isatty():
        size = os.path.getsize(result.path) if result.path else len(result.data or b"")
        raise CommandFailed(
            f"the model answered {result.content_type} ({size} bytes), which is not written "
            "to a terminal: pass --output FILE, or redirect stdout",
            2,
        )
    if output is None:
        sys.stdout.flush()
        _copy(result, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    try:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        with open(output, "wb") as fh:
            _copy(result, fh)
    except OSError as exc:
        raise CommandFailed(f"cannot write {output}: {exc.strerror or exc}", 1) from None
    print(f"{PROG}: wrote {result.content_type} to {output}", file=sys.stderr)


def _copy(result: ModelOutput, target: Any) -> None:
    if result.path is not None:
        with open(result.path, "rb") as fh:
            shutil.copyfileobj(fh, target)
    else:
        target.write(result.data or b"")


if __name__ == "__main__":
    sys.exit(main())
