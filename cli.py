"""The `mia` command: thin. Parses options, calls the library, maps errors to exit codes.

Exit status: 0 success, 1 failed check or runtime failure, 2 usage error.
"""

from __future__ import annotations

import functools
import logging
import os
import sys

import click

from mia import __version__
from mia.engine.errors import ConfigError, MiaError, UsageError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def data_dir_option(fn):
    """--data-dir, shared by every command that touches the log."""
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False),
        default=lambda: os.environ.get("MIA_DATA_DIR", "./mia-data"),
        show_default="$MIA_DATA_DIR or ./mia-data",
        help="Root of the event log.",
    )(fn)


def json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")(fn)


def handle_errors(fn):
    """Map library errors to one line on stderr and an exit code; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UsageError, ConfigError) as exc:
            click.echo(f"mia: error: {exc}", err=True)
            sys.exit(2)
        except MiaError as exc:
            click.echo(f"mia: error: {exc}", err=True)
            sys.exit(1)
        except OSError as exc:
            click.echo(f"mia: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True)
            sys.exit(1)

    return wrapper


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="mia")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """mia: record futures order flow and options chains; replay them exactly."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def main() -> None:
    cli(prog_name="mia")


if __name__ == "__main__":
    main()
