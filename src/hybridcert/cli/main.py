"""Entry point of the ``hybridcert`` command.

Every failure ends in one line on stderr starting ``hybridcert: error:`` and a non-zero exit
code, never a traceback (set ``HYBRIDCERT_DEBUG=1`` to see one).  Ctrl-C exits with 130; a
run whose model raised on some inputs (all others certified and stored) exits with 4.
"""

from __future__ import annotations

import os
import sys

import typer

from hybridcert.cli import (
    attack_command,
    certificate_commands,
    dataset_command,
    inspect_command,
    run_commands,
    serve_command,
    train_command,
)

app = typer.Typer(
    name="hybridcert",
    help="Joint (image L2 + token substitution) robustness certificates by hybrid smoothing. "
         "Commands that take --model or --config run the code they name: a config is code.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(certificate_commands.bound)
app.command()(certificate_commands.radius)
app.command()(train_command.train)
app.command()(run_commands.certify)
app.command()(run_commands.report)
app.command()(inspect_command.inspect)
app.command()(attack_command.attack)
app.command()(serve_command.serve)
app.add_typer(dataset_command.app, name="dataset")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (2: bad usage or input, 3: ``attack``'s soundness
    alarm, 4: the user's model failed on some inputs of a run (the others are stored),
    1: other failure, 130: interrupted)."""
    try:
        code = app(args=argv, standalone_mode=False)
    except typer.Exit as stop:
        return stop.exit_code
    except (typer.Abort, KeyboardInterrupt):
        print("hybridcert: interrupted", file=sys.stderr)
        return 130
    except typer.TyperException as err:  # usage errors: unknown option, bad value, ...
        message = err.format_message() if hasattr(err, "format_message") else str(err)
        return _fail(message, 2)
    except (ValueError, FileNotFoundError) as err:
        return _fail(str(err), 2)
    except OSError as err:
        return _fail(f"{err.strerror or err}" + (f": {err.filename}" if err.filename else ""), 1)
    except Exception as err:  # a bug: still one line, and how to see more
        if os.environ.get("HYBRIDCERT_DEBUG"):
            raise
        from hybridcert.runs.runner import ModelFailure

        if isinstance(err, ModelFailure):     # the user's model, not hybridcert
            return _fail(str(err), 4)
        return _fail(f"internal error ({type(err).__name__}: {err}); set HYBRIDCERT_DEBUG=1 "
                     f"for a traceback and please report it", 1)
    # Outside standalone mode click returns typer.Exit's code instead of raising it.
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


def _fail(message: str, code: int) -> int:
    print(f"hybridcert: error: {' '.join(str(message).split())}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())


def _console() -> None:
    sys.exit(main())
