"""``CommandInterface``: the base of every fullctl management command.

It adds two options to the command (and to each of its subcommands):

* ``-Q/--queue``: do not run the command here; queue a task (``CommandTask``) that runs
  it in a poller, print the task id and return;
* ``--timeout N``: the queued task's timeout in seconds (only with ``-Q``).

The queued task replays exactly the tokens the parser was given (the words typed after
``manage.py <command>``, or the positional strings of ``call_command()``), minus ``-Q``,
``--queue`` and ``--timeout``: nothing is added or forced. Keyword options of
``call_command()`` are not tokens, so the replayed argv is parsed again first; if it does
not give exactly the options of this call, ``-Q`` raises ``CommandError`` and queues
nothing. See ``docs/commands.md``.
"""

import argparse
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from django.core.management.base import BaseCommand, CommandError, OutputWrapper
from django.core.management.color import color_style, no_style

# options a replay need not reproduce: the queue options, and skip_checks, which
# call_command() sets by itself (the poller runs the command through call_command too)
_NOT_COMPARED = frozenset({"queue", "timeout", "skip_checks"})
_MISSING = object()


def positive_int(value: str) -> int:
    """The type of ``--timeout``: a task timeout of zero or less makes no sense."""
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
    stdout: OutputWrapper
    stderr: OutputWrapper

    # the tokens the parser was last given, consumed by the next execute()
    _recorded_argv: list[str] | None = None
    _command_name: str | None = None

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

    def execute(self, *args: Any, **options: Any):
        recorded, self._recorded_argv = self._recorded_argv, None
        queue, timeout = False, None
        if self.queue_allowed:  # else a `queue` option would be the command's own
            queue = options.pop("queue", False)
            timeout = options.pop("timeout", None)
        self._setup_output(options)
        if queue:
            return self._queue(args, options, recorded or [], timeout)
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
        """What ``BaseCommand.execute`` does with the output options: the queue path does
        not reach it but prints the task id, and ``before_run`` may print too."""
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

    def _queue(self, args: tuple, options: dict, recorded: list[str], timeout: int | None) -> str:
        from django_fullctl.models import CommandTask

        # a keyword timeout of call_command() skips positive_int; type() also refuses True
        if timeout is not None and (type(timeout) is not int or timeout <= 0):
            raise CommandError(f"--timeout must be a positive number of seconds, not {timeout!r}")
        argv = self.queued_argv(args, options, recorded)
        task = CommandTask.create_task(self.command_name, argv, timeout=timeout)
        self.stdout.write(f"queued {self.command_name} as task {task.pk}")
        return str(task.pk)

    def queued_argv(self, args: Sequence[Any], options: dict, recorded: list[str]) -> list[str]:
        """The argv a queued run replays: ``recorded`` without the queue options.

        It is checked before anything is stored: a queued run that would get other options
        than this call (a keyword option of ``call_command()``, ``-Q`` inside ``-dQ``) is
        refused here rather than discovered when the poller runs it.
        """
        refused = sorted(set(self.stealth_options) & set(options))
        if refused:
            raise CommandError(
                f"-Q cannot queue {', '.join(refused)}: these options have no command-line"
                " form. Run the command without -Q."
            )
        argv = strip_queue_tokens(recorded)
        problem = self._mismatch(argv, args, options)
        if problem is not None:
            raise CommandError(
                f"-Q cannot replay this call of {self.command_name} exactly: {problem}. A queued"
                " command replays only the arguments given as command-line strings: pass"
                f" options as strings, e.g. call_command({self.command_name!r},"
                " '--option=value', queue=True), and write -Q/--queue and --timeout apart,"
                " in full."
            )
        return argv

    def _mismatch(self, argv: list[str], args: Sequence[Any], options: dict) -> str | None:
        """Why ``argv`` does not give exactly these ``args`` and ``options`` (None if it does)."""
        parser = self.create_parser("manage.py", self.command_name)
        for each in (parser, *_subparsers(parser)):
            each.called_from_command_line = False  # raise CommandError, do not exit
        try:  # the plain argparse method: neither recorded nor Django's missing-args check
            parsed = vars(argparse.ArgumentParser.parse_args(parser, argv))
        except CommandError as exc:
            return f"{argv!r} does not parse ({exc})"
        if parsed.get("queue") or parsed.get("timeout") is not None:
            return "-Q or --timeout is written in a form that cannot be cut out of the argv"
        ignored = _NOT_COMPARED | set(self.base_stealth_options)
        parsed["args"] = list(parsed.get("args", ()))
        wanted = {key: value for key, value in options.items() if key not in ignored}
        wanted["args"] = list(args)
        for key in sorted((wanted.keys() | parsed.keys()) - ignored):
            if parsed.get(key, _MISSING) != wanted.get(key, _MISSING):
                got, want = parsed.get(key), wanted.get(key)
                return f"{argv!r} gives {key}={got!r} where this call has {want!r}"
        return None


def strip_queue_tokens(tokens: Sequence[str]) -> list[str]:
    """The tokens without ``-Q``, ``--queue`` and ``--timeout N`` / ``--timeout=N``.

    Everything after ``--`` is positional and kept as is. Other spellings (abbreviations
    such as ``--que``, ``-Q`` inside a cluster of short flags) are left in: the check that
    the replayed argv parses without ``-Q`` refuses them.
    """
    out: list[str] = []
    words = iter(tokens)
    for token in words:
        if token == "--":
            out.append(token)
            out.extend(words)
            break
        if token in ("-Q", "--queue") or token.startswith("--timeout="):
            continue
        if token == "--timeout":
            next(words, None)
            continue
        out.append(token)
    return out


def _add_queue_arguments(parser: argparse.ArgumentParser, cls: type, suppress: bool) -> None:
    try:
        parser.add_argument(
            "-Q", "--queue", action="store_true",
            help="queue the command as a task instead of running it; prints the task id",
            default=argparse.SUPPRESS if suppress else False,
        )
        parser.add_argument(
            "--timeout", type=positive_int, metavar="SECONDS",
            help="maximum run time of the queued task (with -Q)",
            default=argparse.SUPPRESS if suppress else None,
        )
    except argparse.ArgumentError as exc:
        raise TypeError(
            f"{cls.__module__}.{cls.__qualname__} defines an option that CommandInterface"
            f" reserves for queueing ({exc}); rename it or set queue_allowed = False"
        ) from None


def _record_parse_args(command: CommandInterface, parser: argparse.ArgumentParser) -> None:
    """Remember the tokens the parser is given: ``run_from_argv`` and ``call_command``
    both parse through ``parser.parse_args``, and execute() sees only the result."""
    original = parser.parse_args

    def parse_args(args=None, namespace=None):
        command._recorded_argv = [str(a) for a in (sys.argv[1:] if args is None else args)]
        return original(args, namespace)

    parser.parse_args = parse_args  # type: ignore[method-assign]


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every nested subparser, once (aliases share a parser)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in {id(each): each for each in action.choices.values()}.values():
                yield sub
                yield from _subparsers(sub)
