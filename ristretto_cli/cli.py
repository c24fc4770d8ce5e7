"""The `ristretto` command line: one click group, thin commands over the library."""
from __future__ import annotations

import fnmatch
import sys
import traceback

import click

from . import __version__
from .commands import convert, cost, demo, export, finetune, fold, quantize
from .commands import run as run_commands
from .errors import RistrettoError


class DashUnderscoreGroup(click.Group):
    """Find `compute_mean` as well as `compute-mean`."""

    def get_command(self, ctx, name):
        return super().get_command(ctx, name.replace("_", "-")) or super().get_command(ctx, name)


# Flags that glog and gflags define, which the original's users pass out of habit
# (`GLOG_logtostderr=1 caffe train -alsologtostderr ...`). We log through Python's
# logging to stderr anyway, so they are accepted anywhere on the line and ignored.
GLOG_BOOL_FLAGS = frozenset({
    "logtostderr", "alsologtostderr", "colorlogtostderr", "log_prefix", "drop_log_memory",
    "stop_logging_if_full_disk", "timestamp_in_logfile_name", "symbolize_stacktrace", "logtosyslog",
    "log_utc_time", "log_year_in_prefix"})
GLOG_VALUE_FLAGS = frozenset({
    "stderrthreshold", "minloglevel", "v", "vmodule", "log_dir", "log_link", "logbuflevel", "logbufsecs",
    "max_log_size", "logemaillevel", "alsologtoemail", "logmailer", "log_backtrace_at", "logfile_mode",
    # gflags' own: environment and unknown-flag handling
    "fromenv", "tryfromenv", "undefok"})
# the program names a flagfile's "program filter" lines may name (gflags: globs)
FLAGFILE_PROGRAMS = ("ristretto", "caffe", "caffe.bin")


def _gflag(arg: str) -> tuple[str, str | None] | None:
    """(name with underscores, value or None) of a `-name[=v]` / `--name[=v]` argument;
    None for what is not such a flag (values, negative numbers, `--`)."""
    if not arg.startswith("-") or arg == "--":
        return None
    body = arg[2:] if arg.startswith("--") else arg[1:]
    if not body or not body[0].isalpha():
        return None
    name, eq, value = body.partition("=")
    return name.replace("-", "_"), (value if eq else None)


def read_flagfile(path: str, _open: tuple = ()) -> list[str]:
    """The flags of a gflags flagfile: one flag per line (`--name=value`), `#` comments and
    blank lines skipped; a line not starting with '-' names the programs (globs) the
    flags after it are for, as in gflags. Nested --flagfile lines are expanded too."""
    if path in _open:
        raise RistrettoError(f"--flagfile {path}: includes itself (through {' -> '.join(_open)})")
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise RistrettoError(f"--flagfile {path}: no such file") from None
    except IsADirectoryError:
        raise RistrettoError(f"--flagfile {path}: is a directory, not a flagfile") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RistrettoError(f"--flagfile {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})") from None
    flags, applies = [], True
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith("-"):
            applies = any(fnmatch.fnmatch(prog, pattern) for pattern in line.split() for prog in FLAGFILE_PROGRAMS)
            continue
        if applies:
            flags.append(line)
    return expand_gflags(flags, _open + (path,))


def expand_gflags(args: list[str], _open: tuple = ()) -> list[str]:
    """Read `--flagfile=FILE` (or `--flagfile FILE`) in place, and drop glog's flags
    (`--logtostderr`, `-alsologtostderr`, `--v=2`, `-v 2`, `--nologtostderr`, ...).
    Nothing after `--` is touched."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out.extend(args[i:])
            break
        flag = _gflag(arg)
        name, value = flag if flag else (None, None)
        if name == "flagfile":
            if value is None:
                if i + 1 >= len(args):
                    raise RistrettoError("--flagfile: needs a file name (--flagfile=FILE)")
                value, i = args[i + 1], i + 1
            out.extend(read_flagfile(value, _open))
        elif name in GLOG_BOOL_FLAGS or (name and name.startswith("no") and name[2:] in GLOG_BOOL_FLAGS):
            pass
        elif name in GLOG_VALUE_FLAGS:
            if value is None:
                i += 1  # gflags: `-v 2` takes the next argument as the value
        else:
            out.append(arg)
        i += 1
    return out


def normalize_flag_spelling(args: list[str]) -> list[str]:
    """Rewrite `--some_flag[=v]` and Caffe's gflags form `-some_flag[=v]` to
    `--some-flag[=v]`; values, one-letter options and negative numbers are untouched."""
    out = []
    for a in args:
        if a.startswith("-") and not a.startswith("--") and len(a.partition("=")[0]) > 2 \
                and a[1].isalpha():
            a = "-" + a
        if a.startswith("--") and len(a) > 2:
            name, eq, value = a[2:].partition("=")
            a = "--" + name.replace("_", "-") + eq + value
        out.append(a)
    return out


@click.group(cls=DashUnderscoreGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ristretto")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def cli(ctx, debug):
    """Simulate reduced-precision CNN arithmetic on Caffe networks, search word widths,
    fine-tune and write quantized Caffe-Ristretto models."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    from .commands import ui

    ui.show_library_warnings()  # the library logs its warnings; the command line shows them


for _m in (run_commands, convert, quantize, finetune, demo, export, fold, cost):
    for _cmd in _m.COMMANDS:
        cli.add_command(_cmd)


GROUP_FLAGS = frozenset({"--debug", "--version", "--help", "-h"})


def flags_after_verb(args: list[str]) -> list[str]:
    """Move a command's flags given before its verb to just after it, as gflags allows
    (`caffe --model=m.prototxt test`); the group's own flags stay in front."""
    names = set(cli.commands)
    verb = next((k for k, a in enumerate(args) if a.replace("_", "-") in names or a in names), None)
    if not verb or isinstance(cli.commands.get(args[verb].replace("_", "-")), click.Group):
        return args
    if "--" in args[:verb]:
        return args
    front = [a for a in args[:verb] if a in GROUP_FLAGS]
    moved = [a for a in args[:verb] if a not in GROUP_FLAGS]
    return front + [args[verb]] + moved + args[verb + 1:]


def usage_error_line(exc: click.ClickException) -> str:
    """One line for a click error: the command, what is wrong, where help is."""
    ctx = getattr(exc, "ctx", None)
    message = " ".join(exc.format_message().split()).rstrip(".")
    if ctx is None:
        return f"ristretto: error: {message}; see 'ristretto --help'"
    where = ctx.command_path.partition(" ")[2]
    return f"ristretto: error: {where + ': ' if where else ''}{message}; see '{ctx.command_path} --help'"


def run(argv: list[str] | None = None) -> int:
    """Run one command line and return its exit status (0, 2 for bad input, 130 when
    interrupted); errors become one line on stderr. Never raises SystemExit."""
    try:
        args = normalize_flag_spelling(expand_gflags(list(sys.argv[1:] if argv is None else argv)))
    except RistrettoError as exc:
        click.echo(f"ristretto: error: {exc}", err=True)
        return 2
    args = flags_after_verb(args)
    # --debug works anywhere on the line (`ristretto info --debug ...` too).
    cut = args.index("--") if "--" in args else len(args)
    debug = "--debug" in args[:cut]
    if debug:
        args = ["--debug"] + [a for a in args[:cut] if a != "--debug"] + args[cut:]
    try:
        status = cli.main(args=args, prog_name="ristretto", standalone_mode=False)
        return status if isinstance(status, int) else 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("ristretto: interrupted", err=True)
        return 130
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        return 2
    except click.ClickException as exc:
        click.echo(usage_error_line(exc), err=True)
        return 2
    except RistrettoError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"ristretto: error: {exc}", err=True)
        return 2
    except MemoryError as exc:  # e.g. a batch or a layer far too large for this machine
        if debug:
            traceback.print_exc()
        click.echo(f"ristretto: error: out of memory{': ' + str(exc) if str(exc) else ''}", err=True)
        return 2


def main(argv: list[str] | None = None) -> None:
    """The console script: :func:`run`, exiting with its status when it is not 0."""
    status = run(argv)
    if status:
        sys.exit(status)


if __name__ == "__main__":
    main()
