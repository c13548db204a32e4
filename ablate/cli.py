"""The ``ablate`` command: run, finetune, study, compare, ui, variants, models.

``run`` options are generated from :class:`ablate.config.RunConfig` (one flag per field,
help from the field's metadata), so the CLI, YAML config files and study files share one
set of keys. Precedence: defaults < ``--config FILE`` < flags given on the command line.
Commands implemented elsewhere expose ``add_arguments(parser)`` and ``command(args) -> int``.

Any user error prints one line ``ablate <command>: error: ...`` and exits with status 2;
whatever was already logged to MLflow stays there.
"""

from __future__ import annotations

import argparse
import difflib
import gc
import importlib
import os
import re
import sys
from typing import Any, Callable, NoReturn, Sequence

from ablate.cli_options import add_dataclass_options, add_output, add_tracking_uri, print_rows
from ablate.config import RunConfig, config_fields, config_from_mapping, load_yaml
from ablate.exceptions import AblateError

__all__ = ["main", "build_parser"]

_GROUP_TITLES = {"model": "model and attention variant", "data": "data", "optim": "optimisation",
                 "alpha": "alpha schedule", "finetune": "fine-tuning", "run": "run and tracking"}


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    add_dataclass_options(parser, RunConfig, groups=_GROUP_TITLES, skip=("tracking_uri",),
                          default=argparse.SUPPRESS)  # fmt: skip
    add_tracking_uri(parser, default=argparse.SUPPRESS)  # shared with other commands
    parser.add_argument("--config", metavar="FILE", help="YAML file with the same keys as these "
                        "flags; flags given here override it")  # fmt: skip
    parser.add_argument("--resume", metavar="RUN_ID", help="continue an interrupted run from its "
                        "last checkpoint, in the same MLflow run")  # fmt: skip


def resolve_run_config(args: argparse.Namespace, base: dict[str, Any] | None = None) -> RunConfig:
    """defaults < ``base`` < --config FILE < flags given on the command line."""
    values: dict[str, Any] = dict(base or {})
    if getattr(args, "config", None):
        values.update(load_yaml(args.config))
        source = args.config
    else:
        source = "config"
    cfg = config_from_mapping(values, source=source)
    return config_from_mapping({**cfg.to_dict(), **_flags(args)}, source="command line")


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    """The run-config flags given on the command line."""
    names = {f.name for f in config_fields()}
    return {k: v for k, v in vars(args).items() if k in names}


def _run_command(args: argparse.Namespace, base: dict[str, Any] | None = None) -> int:
    # values are checked before torch and MLflow load (seconds): a bad one fails at once
    cfg = _config_of_run(args) if args.resume else resolve_run_config(args, base)
    from ablate.trial.run import train

    result = train(cfg, resume_run_id=args.resume)
    if not cfg.quiet:
        from ablate.tracking import resolve_tracking_uri

        t, b = result.test, result.best_test
        print(f"run {result.run_id}: final weights (epoch {cfg.epochs}): test_acc "
              f"{t.get('acc', float('nan')):.4f}, test_f1 {t.get('f1', float('nan')):.4f}; "
              f"best-validation weights (epoch {result.best_epoch}, val_acc "
              f"{result.best_val_acc:.4f}): test_acc {b.get('acc', float('nan')):.4f}")
        from ablate.tracking.store import is_server, url_of_run

        uri = resolve_tracking_uri(cfg.tracking_uri)
        url = url_of_run(uri, result.run_id)
        if is_server(uri):  # a tracking server is its own UI
            print(f"see the curves at {url}")
        else:
            print(f"see the curves with: ablate ui --tracking-uri {uri}, then open\n  {url}")
    return 0


def _config_of_run(args: argparse.Namespace) -> RunConfig:
    """The resolved config logged with the run being resumed (flags may change only
    run-local settings such as --quiet or --device)."""
    import tempfile

    import yaml

    from ablate.tracking import Tracker, resolve_tracking_uri

    flags = _flags(args)
    uri = flags.get("tracking_uri")
    try:
        tracker = Tracker(uri, args.resume)
        path = tracker.download_artifact("config.yaml", tempfile.mkdtemp())
    except Exception as err:
        raise AblateError(f"cannot resume run {args.resume!r} from {resolve_tracking_uri(uri)}: "
                          f"{str(err).splitlines()[0]}") from None  # fmt: skip
    logged = yaml.safe_load(path.read_text())
    from ablate.study.common import RUN_FLAGS  # where and how a run trains, never what

    allowed = {*RUN_FLAGS, "quiet", "tracking_uri"}
    changed = sorted(k for k, v in flags.items() if k not in allowed and logged.get(k) != v)
    if changed:
        raise AblateError("--resume continues the logged config; these flags would change it: "
                          + ", ".join(changed))  # fmt: skip
    return config_from_mapping({**logged, **flags}, source=f"run {args.resume}")


def _finetune_command(args: argparse.Namespace) -> int:
    """`ablate run` that continues from ``--init-from``: by default the source's own variant,
    parameters and final alpha, or softmax_v annealed from alpha 0 (exactly standard
    attention) to 1 from standard-attention weights (``SourceWeights.continuation``)."""
    if args.resume:
        return _run_command(args)
    cfg = resolve_run_config(args)  # bad values fail before torch and MLflow load
    if not cfg.init_from:
        raise AblateError("finetune needs --init-from SOURCE (a .pth file, runs:/RUN_ID, a run id "
                          "or models:/NAME/VERSION)")  # fmt: skip
    from ablate.finetune import load_source

    source = load_source(cfg.init_from, cfg.tracking_uri)  # read once: the trial reuses it
    return _run_command(args, {"warmup_epochs": 1.0, **source.continuation()})


def _add_list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default="*", help="fnmatch filter, e.g. 'cct_7*'")
    add_output(parser)
    parser.add_argument("--variant-file", help="also load variants from this Python file")


def _variants_command(args: argparse.Namespace) -> int:
    import variants

    if args.variant_file:
        variants.load_variant_file_once(args.variant_file)
    rows = [{"name": s.name, "params": ", ".join(f"{k}={v}" for k, v in s.params.items()) or "-",
             "source": s.source, "description": s.description}
            for s in variants.list_attention(args.pattern)]  # fmt: skip
    print_rows(rows, args.output)
    return 0


def _models_command(args: argparse.Namespace) -> int:
    from ablate.models._registry import list_models, model_entry

    rows = []
    for name in list_models(args.pattern):
        entry = model_entry(name)
        d = entry.defaults
        rows.append({
            "name": name, "task": entry.task, "layers": d.get("num_layers", "-"),
            "heads": d.get("num_heads", "-"), "dim": d.get("dim", "-"),
            "pooling": "seqpool" if d.get("seq_pool", True) else "class token",
            "pos_emb": d.get("positional_embedding", "-"),
            "input": d.get("img_size", d.get("max_len", "-")),
            "classes": d.get("num_classes", "-"),
        })  # fmt: skip
    print_rows(rows, args.output)
    return 0


def _completion_command(args: argparse.Namespace) -> int:
    import shtab

    print(shtab.complete(build_parser(), shell=args.shell))
    return 0


# name -> (help, add_arguments, command); "module" is its add_arguments / command, "module:x"
# its add_x_arguments / x_command.
_COMMANDS: dict[str, tuple[str, Any, Any]] = {
    "run": ("train one configuration and log its learning curves to MLflow", _add_config_flags,
            _run_command),
    "finetune": ("ablate run with fine-tuning defaults: --init-from weights, softmax_v annealed "
                 "from alpha 0 to 1", _add_config_flags, _finetune_command),
    "study": ("run an Optuna study from a study file (studies/*.yaml)", "ablate.study", None),
    "compare": ("compare learning curves across runs: plots and significance tables",
                "ablate.compare", None),
    "ui": ("start the MLflow UI on the same store (bound to 127.0.0.1) and print the URL of the "
           "newest experiment in the model-training view", "ablate.ui", None),
    "export": ("write a logged or registered model (models:/...) as a plain checkpoint file",
               "ablate.ui:export", None),
    "dashboard": ("start optuna-dashboard on a study's storage (bound to 127.0.0.1)",
                  "ablate.ui:dashboard", None),
    "variants": ("list the registered attention variants", _add_list_arguments, _variants_command),
    "models": ("list the registered backbones", _add_list_arguments, _models_command),
    "completion": (
        "print a shell completion script: eval \"$(ablate completion bash)\" in ~/.bashrc, or "
        "ablate completion zsh > ~/.zfunc/_ablate",
        lambda p: p.add_argument("shell", choices=("bash", "zsh"), help="the shell"),
        _completion_command,
    ),
}


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line plus a hint, not a screenful of usage first."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # "invalid choice: 'rn' (choose from ...)": name the closest choice first
        wrong = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        choices = re.findall(r"'([^']*)'", wrong.group(2)) if wrong else []
        close = difflib.get_close_matches(wrong.group(1), choices, n=1) if wrong else []
        if close:
            guess = f"invalid choice: {wrong.group(1)!r} (did you mean {close[0]}?)"
            message = message[: wrong.start()] + guess
        self.exit(2, f"{self.prog}: error: {message}\nhint: run '{self.prog} --help' for usage\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ablate",
        description="Attention-variant ablations for compact transformers. "
        "Typical use: `ablate run --variant softmax_v --alpha-schedule linear`, then `ablate ui`.",
    )
    from ablate import __version__

    parser.add_argument("--version", action="version", version=f"ablate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_Parser)  # fmt: skip
    for name, (help_text, add, cmd) in _COMMANDS.items():
        description = help_text[0].upper() + help_text[1:] + "."
        p = sub.add_parser(name, help=help_text, description=description)
        if isinstance(add, str):
            path, _, x = add.partition(":")
            module = importlib.import_module(path)
            getattr(module, f"add_{x}_arguments" if x else "add_arguments")(p)
            p.set_defaults(_handler=getattr(module, f"{x}_command" if x else "command"))
        else:
            add(p)
            p.set_defaults(_handler=cmd)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and isinstance(getattr(args, "overrides", None), list):  # after a flag
        args.overrides += [e for e in extra if not e.startswith("-")]
        extra = [e for e in extra if e.startswith("-")]
    if extra:  # reported by the command's own parser, with its usage hint
        command = _subparser(parser, args.command)
        command.error(_unrecognized(command, extra))
    handler: Callable[[argparse.Namespace], int] = args._handler
    try:
        status = int(handler(args) or 0)
        sys.stdout.flush()  # a closed pipe (`ablate ... | head`) surfaces here, not at exit
        return status
    except BrokenPipeError:
        # The reader went away: stop quietly, as `ls | head` does (128 + SIGPIPE).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except (AblateError, ValueError, FileNotFoundError) as err:
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"ablate {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C, or ablate.exceptions.Stopped (SIGTERM, ...)
        print(f"ablate {args.command}: {err or 'interrupted'}", file=sys.stderr)
        return getattr(err, "exit_code", 130)  # 128 + the signal's number


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _unrecognized(parser: argparse.ArgumentParser, extra: list[str]) -> str:
    """``unrecognized arguments: --epochz (did you mean --epochs?)``: the unknown flags (the
    values after them are not news), else the stray values."""
    flags = [a for a in extra if a.startswith("-") and len(a) > 1]
    message = f"unrecognized arguments: {' '.join(flags or extra)}"
    known = [o for o in parser._option_string_actions if o.startswith("--")]
    guesses = [close[0] for flag in flags
               if (close := difflib.get_close_matches(flag.partition("=")[0], known, n=1))]
    if guesses:
        message += f" (did you mean {', '.join(guesses)}?)"
    return message


def exit_with(status: int) -> NoReturn:
    """End the process with ``status``. Everything is written by now, so the interpreter's
    last garbage collection, over every object torch, MLflow and Optuna made (2 s on 2 cores,
    at every command's end), is skipped: the objects are frozen out of its reach."""
    gc.freeze()
    sys.exit(status)


def console() -> NoReturn:
    """The ``ablate`` command (``python -m ablate``)."""
    exit_with(main())


if __name__ == "__main__":  # pragma: no cover
    console()
