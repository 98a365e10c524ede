"""``CommandInterface``: the base of every fullctl management command.

It adds two options to the command (and to each of its subcommands):

* ``-Q/--queue``: do not run the command here; queue a task (``CommandTask``) that runs
  it in a poller with the arguments the user gave, print the task id and return;
* ``--timeout N``: the queued task's timeout in seconds (only with ``-Q``).

The queued task replays the user's argv exactly, minus ``-Q``/``--queue`` and
``--timeout``: nothing is added or forced. From ``manage.py`` the argv is the one the
user typed. ``call_command()`` has no argv, so it is rebuilt from what the call passed
(the positional strings as given, then the options passed as keywords); the rebuilt argv
must parse back to the very options of the call, or ``-Q`` refuses with ``CommandError``
and queues nothing. See ``docs/commands.md``.
"""

import argparse
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from django.core.management.base import BaseCommand, CommandError, OutputWrapper
from django.core.management.color import color_style, no_style

# destinations of the options that CommandInterface adds: never replayed
QUEUE_DESTS = ("queue", "timeout")
# options that call_command() sets by itself and a replay does not need
_NOT_COMPARED = {"skip_checks"}
_MISSING = object()


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number <= 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return number


class CommandInterface(BaseCommand):
    """Base of fullctl commands: ``-Q`` queues the command, ``before_run`` runs before it.

    Subclasses implement ``run(*args, **options)`` (or override ``handle`` as in any
    Django command). ``run`` receives the command's options without ``queue`` and
    ``timeout``. Set ``queue_allowed = False`` for a command that must never be queued
    (it then gets neither ``-Q`` nor ``--timeout``).
    """

    queue_allowed = True

    _recorded_argv: list[str] | None = None
    _command_name: str | None = None

    # -- the parser -----------------------------------------------------------

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        self._command_name = subcommand
        if not self.queue_allowed:
            return parser
        _add_queue_arguments(parser, type(self), suppress=False)
        for subparser in _subparsers(parser):
            # SUPPRESS: a subcommand that was not given -Q must not reset the value
            # that the parent parser has already stored
            _add_queue_arguments(subparser, type(self), suppress=True)
        _record_parse_args(self, parser)
        return parser

    @property
    def command_name(self) -> str:
        """The name the command was called by (its module's name when not called yet)."""
        return self._command_name or type(self).__module__.rsplit(".", 1)[-1]

    # -- running ----------------------------------------------------------------

    def execute(self, *args: Any, **options: Any):
        recorded, self._recorded_argv = self._recorded_argv, None
        if not self.queue_allowed:
            self._setup_output(options)
            self.before_run(*args, **options)
            return super().execute(*args, **options)
        queue = options.pop("queue", False)
        timeout = options.pop("timeout", None)
        self._setup_output(options)
        if queue:
            return self._queue(args, options, recorded, timeout)
        if timeout is not None:
            raise CommandError("--timeout is the timeout of a queued run: use it with -Q")
        self.before_run(*args, **options)
        return super().execute(*args, **options)

    def before_run(self, *args: Any, **options: Any) -> None:
        """Hook called right before the command runs (not when it is only queued)."""

    def handle(self, *args: Any, **options: Any):
        return self.run(*args, **options)

    def run(self, *args: Any, **options: Any):
        raise NotImplementedError(f"{type(self).__name__} must implement run() or handle()")

    def _setup_output(self, options: dict) -> None:
        """What ``BaseCommand.execute`` does with the output options, for the queue path."""
        if options.get("force_color") and options.get("no_color"):
            raise CommandError("The --no-color and --force-color options can't be used together.")
        if options.get("force_color"):
            self.style = color_style(force_color=True)
        elif options.get("no_color"):
            self.style = no_style()
            self.stderr.style_func = None
        if options.get("stdout"):
            self.stdout = OutputWrapper(options["stdout"])
        if options.get("stderr"):
            self.stderr = OutputWrapper(options["stderr"])

    # -- queueing -----------------------------------------------------------------

    def _queue(
        self, args: tuple, options: dict, recorded: list[str] | None, timeout: int | None
    ) -> str:
        from django_fullctl.commands import CommandTask

        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int)
                                    or timeout <= 0):
            raise CommandError(f"--timeout must be a positive number of seconds, not {timeout!r}")
        argv = self.queued_argv(args, options, recorded)
        task = CommandTask.create_task(self.command_name, argv, timeout=timeout)
        self.stdout.write(f"queued {self.command_name} as task {task.pk}")
        return str(task.pk)

    def queued_argv(
        self, args: Sequence[Any], options: dict, recorded: list[str] | None = None
    ) -> list[str]:
        """The argv a queued run replays: it must parse to exactly these options.

        ``recorded`` is what the parser was given (the user's argv from ``manage.py``, or
        the positional strings of a ``call_command()``); options passed as keywords to
        ``call_command()`` are added to it in their long form. Without ``recorded`` the
        argv is rebuilt from the options alone.
        """
        parser = self.create_parser("manage.py", self.command_name)
        _raise_instead_of_exit(parser)
        refused = sorted(set(self.stealth_options) & set(options))
        if refused:
            raise CommandError(
                f"-Q cannot queue {', '.join(refused)}: these options have no command-line"
                " form. Run the command without -Q."
            )
        target = {
            key: value
            for key, value in options.items()
            if key not in QUEUE_DESTS
            and key not in _NOT_COMPARED
            and key not in self.base_stealth_options
        }
        if any(action.dest == "args" for action in _all_actions(parser)):
            target["args"] = list(args)
        elif args:
            raise CommandError(f"{self.command_name} takes no positional args {list(args)!r}")

        candidates = []
        if recorded is not None:
            candidates.append(lambda: _complete(parser, strip_queue_tokens(recorded), target))
        candidates.append(lambda: _rebuild(parser, target))
        problem = "no command line gives these option values"
        for candidate in candidates:
            argv = candidate()
            if argv is None:
                continue
            problem = _mismatch(parser, argv, target)
            if problem is None:
                return argv
        raise CommandError(
            f"-Q cannot replay this call of {self.command_name} exactly ({problem}). Write the"
            " arguments as they would be typed on the command line, e.g."
            f" call_command({self.command_name!r}, '--option=value', ..., queue=True)."
        )


# -- argv helpers ------------------------------------------------------------------


def strip_queue_tokens(tokens: Sequence[str]) -> list[str]:
    """The tokens without ``-Q``, ``--queue`` and ``--timeout N`` / ``--timeout=N``.

    Everything after ``--`` is positional and kept as is. Other spellings (abbreviations
    such as ``--que``, ``-Q`` inside a cluster of short flags) are caught by the check that
    the replayed argv parses without ``-Q``.
    """
    out: list[str] = []
    tokens = iter(tokens)
    for token in tokens:
        if token == "--":
            out.append(token)
            out.extend(tokens)
            break
        if token in ("-Q", "--queue") or token.startswith("--timeout="):
            continue
        if token == "--timeout":
            next(tokens, None)
            continue
        out.append(token)
    return out


def _add_queue_arguments(parser: argparse.ArgumentParser, cls: type, suppress: bool) -> None:
    extra = {"default": argparse.SUPPRESS} if suppress else {}
    try:
        parser.add_argument(
            "-Q", "--queue", action="store_true",
            help="queue the command as a task instead of running it; prints the task id",
            **({"default": False} | extra),
        )
        parser.add_argument(
            "--timeout", type=positive_int, metavar="SECONDS",
            help="maximum run time of the queued task (with -Q)",
            **({"default": None} | extra),
        )
    except argparse.ArgumentError as exc:
        raise TypeError(
            f"{cls.__module__}.{cls.__qualname__} defines an option that CommandInterface"
            f" reserves for queueing ({exc}); rename it or set queue_allowed = False"
        ) from None


def _record_parse_args(command: CommandInterface, parser: argparse.ArgumentParser) -> None:
    """Remember the tokens the parser is given (``run_from_argv`` and ``call_command``)."""
    original = parser.parse_args

    def parse_args(args=None, namespace=None):
        command._recorded_argv = [str(a) for a in (sys.argv[1:] if args is None else args)]
        return original(args, namespace)

    parser.parse_args = parse_args


def _subparser_actions(parser: argparse.ArgumentParser) -> list[argparse._SubParsersAction]:
    return [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every nested subparser, once (aliases share a parser)."""
    seen: set[int] = set()
    stack = [parser]
    while stack:
        for action in _subparser_actions(stack.pop()):
            for sub in action.choices.values():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    stack.append(sub)
                    yield sub


def _all_actions(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    yield from parser._actions
    for sub in _subparsers(parser):
        yield from sub._actions


def _raise_instead_of_exit(parser: argparse.ArgumentParser) -> None:
    """Django's parsers raise CommandError instead of exiting when not on the command line."""
    for each in (parser, *_subparsers(parser)):
        each.called_from_command_line = False


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> dict:
    return vars(argparse.ArgumentParser.parse_args(parser, argv))


def _mismatch(parser: argparse.ArgumentParser, argv: list[str], target: dict) -> str | None:
    """Why ``argv`` does not parse to ``target`` (None when it does)."""
    try:
        parsed = _parse(parser, argv)
    except CommandError as exc:
        return f"{argv!r} does not parse: {exc}"
    if parsed.get("queue") or parsed.get("timeout") is not None:
        return "-Q or --timeout is written in a form that cannot be removed; write it apart"
    for key, value in target.items():
        if parsed.get(key, _MISSING) != value:
            return f"{key!r} would be {parsed.get(key)!r} instead of {value!r}"
    return None


def _chain(parser: argparse.ArgumentParser, target: dict) -> list[argparse.ArgumentParser]:
    """The parser and the subparsers that ``target`` chose, outermost first."""
    chain = [parser]
    while True:
        actions = _subparser_actions(chain[-1])
        if not actions:
            return chain
        action = actions[0]
        name = target.get(action.dest) if action.dest != argparse.SUPPRESS else None
        if name not in action.choices:
            return chain
        chain.append(action.choices[name])


def _complete(
    parser: argparse.ArgumentParser, argv: list[str], target: dict
) -> list[str] | None:
    """``argv`` plus the options the target sets that ``argv`` does not (keyword options
    of ``call_command``), in the order the parser defines them: options of the command
    itself go first, options of the innermost subcommand last."""
    try:
        parsed = _parse(parser, argv)
    except CommandError:
        return None
    missing = {key for key, value in target.items() if parsed.get(key, _MISSING) != value}
    if not missing:
        return argv
    chain = _chain(parser, target)
    front: list[str] = []
    back: list[str] = []
    for level, each in enumerate(chain):
        for action in each._actions:
            if action.dest not in missing or not action.option_strings:
                continue
            tokens = option_tokens(action, target[action.dest])
            if tokens is None:
                return None
            if level == 0:
                front += tokens
            elif level == len(chain) - 1 and "--" not in argv:
                back += tokens
            else:
                return None
            missing.discard(action.dest)
    return None if missing else front + argv + back


def _rebuild(parser: argparse.ArgumentParser, target: dict) -> list[str] | None:
    """An argv for ``target`` from scratch: at each level the options that differ from
    their default, then the positionals in order (the subcommand name among them)."""
    argv: list[str] = []
    done: set[str] = set()
    level: argparse.ArgumentParser | None = parser
    while level is not None:
        parser, level = level, None
        positionals: list[str] = []
        for action in parser._actions:
            if action.dest in done or (
                action.dest == argparse.SUPPRESS
                and not isinstance(action, argparse._SubParsersAction)
            ):
                continue
            value = target.get(action.dest, _MISSING)
            if isinstance(action, argparse._SubParsersAction):
                if value is _MISSING or value not in action.choices:
                    return None  # a subparser without dest: its choice is not known
                positionals.append(value)
                level = action.choices[value]
            elif value is _MISSING:
                continue
            elif action.option_strings:
                if value == action.default:
                    continue
                tokens = option_tokens(action, value)
                if tokens is None:
                    return None
                argv += tokens
            else:
                tokens = positional_tokens(action, value)
                if tokens is None:
                    return None
                positionals += tokens
            done.add(action.dest)
        argv += positionals
    return argv


def _long(action: argparse.Action) -> str:
    return next((s for s in action.option_strings if s.startswith("--")), action.option_strings[0])


def option_tokens(action: argparse.Action, value: Any) -> list[str] | None:
    """Tokens that make ``action`` store ``value`` (None when there are none)."""
    option = _long(action)
    if isinstance(action, argparse.BooleanOptionalAction):
        if isinstance(value, bool):
            negative = [s for s in action.option_strings if s.startswith("--no-")]
            return [option] if value else negative[:1] or None
        return None
    if isinstance(action, argparse._StoreConstAction):  # also store_true / store_false
        return [option] if value == action.const else None
    if isinstance(action, argparse._CountAction):
        extra = value - (action.default or 0) if isinstance(value, int) else -1
        return [option] * extra if extra >= 0 else None
    if isinstance(action, argparse._AppendConstAction | argparse._AppendAction):
        base = list(action.default or [])
        if not isinstance(value, list) or value[: len(base)] != base:
            return None
        tokens: list[str] = []
        for item in value[len(base):]:
            if isinstance(action, argparse._AppendConstAction):
                if item != action.const:
                    return None
                tokens.append(option)
            else:
                tokens += _with_values(action, option, item)
        return tokens
    if type(action) is argparse._StoreAction:
        if action.nargs == "?" and value == action.const:
            return [option]
        return _with_values(action, option, value)
    return None


def _with_values(action: argparse.Action, option: str, value: Any) -> list[str]:
    if action.nargs in (None, "?"):
        return [f"{option}={value}"]
    return [option, *map(str, value)]


def positional_tokens(action: argparse.Action, value: Any) -> list[str] | None:
    if type(action) is not argparse._StoreAction:
        return None
    if action.nargs is None:
        return [str(value)]
    if action.nargs == "?":
        return [] if value == action.default else [str(value)]
    return [str(item) for item in value] if isinstance(value, list | tuple) else None
