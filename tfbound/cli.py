"""The thin command line: parse -> config -> library call -> render -> exit code.

Exit codes: 0 success, 1 a gate failed, 2 usage error, 3 bad input. Errors print one line on
stderr (``--debug`` shows the traceback). Stdout carries only the requested output.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tfbound import __version__
from tfbound.errors import EXIT_BAD_INPUT, TfboundError

app = typer.Typer(
    name="tfbound",
    help="Certified, itemised generalization bounds for pre-trained encoders and fine-tuned heads.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state: dict[str, bool] = {"debug": False}
F = TypeVar("F", bound=Callable[..., Any])


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def handle_errors(fn: F) -> F:
    """Turn a ``TfboundError`` into one line on stderr and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TfboundError as exc:
            if _state["debug"]:
                raise
            _stderr().print(f"[red]error:[/red] {exc}", markup=True, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except (MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:  # an unexpected failure: still one line, distinct code
            if _state["debug"]:
                raise
            _stderr().print(
                f"[red]internal error:[/red] {type(exc).__name__}: {exc} (rerun with --debug)",
                markup=True,
                soft_wrap=True,
            )
            raise typer.Exit(4) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tfbound {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Certified, itemised generalization bounds for pre-trained encoders with fine-tuned heads."""
    _state["debug"] = debug


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    if not enabled:
        yield None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_stderr(),
        transient=True,
    ) as bar:
        tasks: dict[str, Any] = {}

        def update(task: str, done: int, total: int) -> None:
            if task not in tasks:
                tasks[task] = bar.add_task(task, total=total)
            bar.update(tasks[task], completed=done)

        yield update


def emit(
    data: dict[str, Any],
    fmt: OutputFormat,
    json_path: Path | None,
    markdown_path: Path | None,
    table: Callable[[dict[str, Any]], Any],
    markdown: Callable[[dict[str, Any]], str],
) -> None:
    """Write the requested files (complete or absent), then print the requested format."""
    from tfbound.io.atomic import write_text_atomic
    from tfbound.report import to_json

    if json_path is not None:
        write_text_atomic(json_path, to_json(data))
    if markdown_path is not None:
        write_text_atomic(markdown_path, markdown(data))
    if fmt is OutputFormat.json:
        sys.stdout.write(to_json(data))
    elif fmt is OutputFormat.markdown:
        sys.stdout.write(markdown(data))
    else:
        Console(highlight=False).print(table(data))


FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="What to print on stdout.")]
JsonOpt = Annotated[
    Path | None, typer.Option("--json", help="Also write the JSON report to this file.")
]
MarkdownOpt = Annotated[
    Path | None, typer.Option("--markdown", help="Also write a markdown summary to this file.")
]


@app.command()
@handle_errors
def estimate(
    config: Annotated[
        Path, typer.Argument(help="A tfbound.yaml, or a folder that holds one.", show_default=False)
    ],
    delta: Annotated[
        float | None,
        typer.Option(
            min=0.0, max=1.0, help="Total failure probability, split by the config's shares."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the Monte Carlo sign draws.")] = None,
    n_draws: Annotated[
        int | None, typer.Option(min=1, help="Number K of Rademacher sign vectors.")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Feature-extraction batch size.")
    ] = None,
    fmt: FormatOpt = OutputFormat.table,
    json_path: JsonOpt = None,
    markdown_path: MarkdownOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
) -> None:
    """Load the encoder, head and data of CONFIG and print the bound term by term."""
    from tfbound.config import load_config
    from tfbound.pipeline import estimate as run_estimate
    from tfbound.render.markdown import report_markdown
    from tfbound.render.table import report_table

    cfg = load_config(config)
    overrides = {
        k: v
        for k, v in {
            "delta": delta,
            "seed": seed,
            "n_draws": n_draws,
            "batch_size": batch_size,
        }.items()
        if v is not None
    }
    if overrides:
        cfg = cfg.with_bound(**overrides)
    with _progress(not quiet) as progress:
        report = run_estimate(cfg, progress=progress)
    emit(report.to_dict(), fmt, json_path, markdown_path, report_table, report_markdown)


@app.command()
@handle_errors
def schema() -> None:
    """Print the JSON Schema of the report."""
    from tfbound.report import report_schema, to_json

    sys.stdout.write(to_json(report_schema()))


def main() -> None:
    app(prog_name="tfbound")


__all__ = ["EXIT_BAD_INPUT", "app", "emit", "handle_errors", "main"]
