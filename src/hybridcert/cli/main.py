"""Entry point of the ``hybridcert`` command.  Errors print one line on stderr."""

from __future__ import annotations

import sys

import typer

from hybridcert.cli import certificate_commands, run_commands, train_command

app = typer.Typer(
    name="hybridcert",
    help="Joint (image L2 + token substitution) robustness certificates by hybrid smoothing.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(certificate_commands.bound)
app.command()(certificate_commands.radius)
app.command()(train_command.train)
app.command()(run_commands.certify)
app.command()(run_commands.report)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; usage and value errors become one line on stderr and exit code 2."""
    try:
        app(args=argv, standalone_mode=False)
    except typer.Exit as stop:
        return stop.exit_code
    except typer.Abort:
        print("hybridcert: aborted", file=sys.stderr)
        return 130
    except typer.TyperException as err:  # usage errors: unknown option, bad value, ...
        message = err.format_message() if hasattr(err, "format_message") else str(err)
        print(f"hybridcert: error: {' '.join(message.split())}", file=sys.stderr)
        return 2
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"hybridcert: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())


def _console() -> None:
    sys.exit(main())
