"""The `ristretto` command line: one click group, thin commands over the library."""
from __future__ import annotations

import sys
import traceback

import click

from . import __version__
from .commands import convert, demo, finetune, fold, quantize
from .commands import run as run_commands
from .errors import RistrettoError


class DashUnderscoreGroup(click.Group):
    """Find `compute_mean` as well as `compute-mean`."""

    def get_command(self, ctx, name):
        return super().get_command(ctx, name.replace("_", "-")) or super().get_command(ctx, name)


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


for _m in (run_commands, convert, quantize, fold, finetune, demo):
    for _cmd in _m.COMMANDS:
        cli.add_command(_cmd)


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
    args = normalize_flag_spelling(list(sys.argv[1:] if argv is None else argv))
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
