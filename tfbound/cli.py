"""The thin command line: parse -> config -> library call -> render -> exit code.

Exit codes: 0 success, 1 a gate failed, 2 usage error, 3 bad input, 4 internal error. Errors
print one line on stderr (``--debug`` prints the traceback instead, with the same exit code).
Stdout carries only the requested output.
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
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tfbound import __version__
from tfbound.errors import (
    EXIT_BAD_INPUT,
    EXIT_GATE_FAILED,
    EXIT_INTERNAL,
    EXIT_USAGE,
    TfboundError,
    UsageError,
)

app = typer.Typer(
    name="tfbound",
    help="Certified, itemised generalization bounds for pre-trained encoders and fine-tuned heads.",
    no_args_is_help=True,
    add_completion=True,
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


def _print_traceback() -> None:
    import traceback

    sys.stderr.write(traceback.format_exc())


def handle_errors(fn: F) -> F:
    """Turn a ``TfboundError`` into one line on stderr and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TfboundError as exc:
            if _state["debug"]:
                _print_traceback()
                raise typer.Exit(exc.exit_code) from None
            # escape: messages name things like "tfbound[plot]" or "[tool.tfbound.gates]"
            line = " ".join(str(exc).split())  # one line, whatever the message held
            _stderr().print(f"[red]error:[/red] {escape(line)}", markup=True, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except RecursionError:  # an input nested too deeply for a recursive reader
            if _state["debug"]:
                _print_traceback()
            _stderr().print("[red]error:[/red] an input is nested too deeply", markup=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except MemoryError:  # an input too large for this machine: one line, bad input
            if _state["debug"]:
                _print_traceback()
            _stderr().print(
                "[red]error:[/red] out of memory: an input is too large for this machine",
                markup=True,
            )
            raise typer.Exit(EXIT_BAD_INPUT) from None
        except (KeyboardInterrupt, typer.Exit):  # typer.Exit: a chosen exit code
            raise
        except Exception as exc:  # an unexpected failure: still one line, distinct code
            if _state["debug"]:
                _print_traceback()
                raise typer.Exit(EXIT_INTERNAL) from None
            _stderr().print(
                f"[red]internal error:[/red] {type(exc).__name__}: "
                f"{escape(' '.join(str(exc).split())[:300])} "
                "(rerun with --debug)",
                markup=True,
                soft_wrap=True,
            )
            raise typer.Exit(EXIT_INTERNAL) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tfbound {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    allow_code: Annotated[
        bool,
        typer.Option(
            "--allow-code",
            help="Let 'arch: factory' in a config import and run the code it names "
            "(also TFBOUND_ALLOW_CODE=1). Never set it for untrusted pull requests.",
        ),
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Certified, itemised generalization bounds for pre-trained encoders with fine-tuned heads."""
    _state["debug"] = debug
    if allow_code:
        from tfbound.models.build import allow_code as allow_user_code

        allow_user_code(True)


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """Progress bars on stderr, only when it is a terminal (never in a pipe or a CI log)."""
    if not enabled or not _stderr().is_terminal:
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


class CapacityOpt(StrEnum):
    full = "full"
    fast = "fast"
    off = "off"


FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="What to print on stdout.")]
JsonOpt = Annotated[
    Path | None, typer.Option("--json", help="Also write the JSON report to this file.")
]
MarkdownOpt = Annotated[
    Path | None, typer.Option("--markdown", help="Also write a markdown summary to this file.")
]
GatesOpt = Annotated[
    Path | None,
    typer.Option(
        "--gates",
        help="Gates from this YAML file ('gates:' mapping) or pyproject.toml "
        "(\\[tool.tfbound.gates] table) instead of the config's.",
        show_default=False,
    ),
]
BaselineOpt = Annotated[
    Path | None,
    typer.Option(
        "--baseline",
        help="A baseline report (JSON) for gates such as '<= +10%'.",
        show_default=False,
    ),
]
JunitOpt = Annotated[
    Path | None,
    typer.Option("--junit", help="Also write the gate verdicts as JUnit XML.", show_default=False),
]

STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


def append_step_summary(markdown: str) -> None:
    """Append to ``$GITHUB_STEP_SUMMARY`` when it is set (a warning if it cannot)."""
    import os

    target = os.environ.get(STEP_SUMMARY_ENV)
    if not target:
        return
    try:
        with open(target, "a", encoding="utf-8") as fh:
            fh.write(markdown.rstrip("\n") + "\n\n")  # a blank line ends a table
    except OSError as exc:
        _stderr().print(f"warning: cannot append to ${STEP_SUMMARY_ENV} ({target}): {exc}")


def _check_output_folders(*paths: Path | None) -> None:
    """Refuse before any work when an output cannot be written: its folder is missing or not
    writable, or the path is a folder (a full disk is found only when writing; the file is then
    absent, never half-written)."""
    import os

    from tfbound.errors import InputError

    for path in paths:
        if path is None:
            continue
        if path.is_dir():
            raise InputError("cannot write: it is a folder", path=path)
        if not path.parent.is_dir():
            raise InputError("cannot write: the folder does not exist", path=path)
        if not path.exists() and not os.access(path.parent, os.W_OK | os.X_OK):
            raise InputError("cannot write: the folder is not writable", path=path)
        if path.is_file() and not os.access(path, os.W_OK):
            raise InputError("cannot write: the file is read-only", path=path)


def _check_plot_path(path: Path, what: str) -> None:
    """A --plot file: a .png, .svg or .pdf suffix (usage error), matplotlib installed and a
    writable place, all before any work."""
    from tfbound.render.figures import require_matplotlib

    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UsageError("--plot must end in .png, .svg or .pdf")
    require_matplotlib(what)
    _check_output_folders(path)


def _select_gates(gates_file: Path | None, recorded: tuple[Any, ...], where: str) -> Any:
    from tfbound.gates import load_gates_file

    if gates_file is not None:
        return load_gates_file(gates_file)
    if not recorded:
        raise UsageError(
            f"no gates to evaluate: {where} records none; "
            "add a 'gates:' section to tfbound.yaml or pass --gates FILE"
        )
    return recorded


def _read_baseline(baseline: Path | None) -> dict[str, Any] | None:
    from tfbound.compare import read_report

    return None if baseline is None else read_report(baseline)


def _evaluate(gates: Any, data: dict[str, Any], base: dict[str, Any] | None) -> dict[str, Any]:
    from tfbound.gates import evaluate_gates

    result: dict[str, Any] = evaluate_gates(gates, data, base).to_dict()
    return result


def _conclude_gates(verdicts: dict[str, Any], junit: Path | None, source: str) -> None:
    """The end of every gate flow (``estimate --gate`` and ``check``): JUnit, then exit 1 when a
    gate failed."""
    if junit is not None:
        from tfbound.io.atomic import write_text_atomic
        from tfbound.render.junit import gates_junit

        write_text_atomic(junit, gates_junit(verdicts, source=source))
    if not verdicts["passed"]:
        raise typer.Exit(EXIT_GATE_FAILED)


def finish(
    data: dict[str, Any],
    fmt: OutputFormat,
    json_path: Path | None,
    markdown_path: Path | None,
    table: Callable[[dict[str, Any]], Any],
    markdown: Callable[[dict[str, Any]], str],
    verdicts: dict[str, Any] | None = None,
    junit: Path | None = None,
    source: str = "",
) -> None:
    """``emit``, then the gate verdicts (if any), JUnit, the step summary and the exit code.

    With ``--format json`` stdout stays one JSON document (the report) and the gate table goes to
    stderr; with a table or markdown the verdicts follow the report.
    """
    from rich.console import Group

    from tfbound.render.gates_render import gates_markdown, gates_table

    _check_output_folders(json_path, markdown_path, junit)
    if verdicts is None:
        emit(data, fmt, json_path, markdown_path, table, markdown)
        append_step_summary(markdown(data))
        return
    v = verdicts

    def table_with_gates(d: dict[str, Any]) -> Any:
        return Group(table(d), gates_table(v))

    def markdown_with_gates(d: dict[str, Any]) -> str:
        return markdown(d) + "\n" + gates_markdown(v, title="tfbound gates")

    emit(data, fmt, json_path, markdown_path, table_with_gates, markdown_with_gates)
    if fmt is OutputFormat.json:
        _stderr().print(gates_table(v))
    append_step_summary(markdown_with_gates(data))
    _conclude_gates(v, junit, source)


ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        help="Threads for torch and the BLAS libraries together (default: as the environment "
        "sets them).",
        show_default=False,
    ),
]


def _apply_threads(threads: int | None) -> None:
    if threads is not None:
        from tfbound.threads import set_threads

        set_threads(threads)


@app.command()
@handle_errors
def estimate(
    config: Annotated[
        Path, typer.Argument(help="A tfbound.yaml, or a folder that holds one.", show_default=False)
    ],
    delta: Annotated[
        float | None,
        typer.Option(
            help="Failure probability of the best certificate, in (0, 1): split among the "
            "certificates computed (the test-set bound and pretext statements have their own).",
            show_default=False,
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
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show every term's formula and source.")
    ] = False,
    capacity: Annotated[
        CapacityOpt,
        typer.Option(
            help="full: every capacity number; fast: no per-layer norm pass of a transformer "
            "(its per-head norms and proxies left out); off: the certificates alone."
        ),
    ] = CapacityOpt.full,
    gate: Annotated[
        bool, typer.Option("--gate", help="Evaluate the config's gates; exit 1 if one fails.")
    ] = False,
    gates_file: GatesOpt = None,
    baseline: BaselineOpt = None,
    junit: JunitOpt = None,
    transfer_report: Annotated[
        Path | None,
        typer.Option(
            "--transfer",
            help="A 'tfbound transfer' JSON report: C (its envelope) and beta for the "
            "excess-risk decomposition.",
            show_default=False,
        ),
    ] = None,
    transfer_c: Annotated[
        float | None,
        typer.Option(
            "--transfer-c",
            help="Assumed transfer constant C (with --transfer-beta).",
            show_default=False,
        ),
    ] = None,
    transfer_beta: Annotated[
        float | None,
        typer.Option(
            "--transfer-beta",
            help="Transfer exponent beta (assumed with --transfer-c; with --transfer, the "
            "envelope is taken at this beta).",
            show_default=False,
        ),
    ] = None,
    fit_head_first: Annotated[
        bool,
        typer.Option(
            "--fit-head",
            help="First fit the L2 logistic head (lam 1e-3) on the frozen features and write it "
            "to head.weights, as 'tfbound fit-head' does.",
        ),
    ] = False,
    drop_pool_overlap: Annotated[
        bool,
        typer.Option(
            "--drop-pool-overlap",
            help="Drop the unlabeled pool's examples found in the labeled, test or "
            "pre-training data (the report says how many) instead of refusing the pool.",
        ),
    ] = False,
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            help="Where the encoder's feature passes run: cpu, cuda or auto (cuda when one is "
            "available). The bounds are computed in float64 on the CPU either way.",
            show_default=False,
        ),
    ] = None,
    dtype: Annotated[
        str | None,
        typer.Option(
            "--dtype",
            help="The encoder pass's dtype: float32 (default), float64 or bfloat16; the "
            "features are converted to float64 before any bound.",
            show_default=False,
        ),
    ] = None,
    threads: ThreadsOpt = None,
) -> None:
    """Load the encoder, head and data of CONFIG and print the bound term by term.

    Under torchrun -m tfbound estimate, the passes are split over the processes (docs/scale.md)."""
    from tfbound.config import load_config
    from tfbound.gates import parse_gates
    from tfbound.pipeline import estimate as run_estimate
    from tfbound.pipeline.run import check_placement
    from tfbound.render.gates_render import verdict_markdown
    from tfbound.render.markdown import report_markdown
    from tfbound.render.table import report_table

    if delta is not None and not 0.0 < delta < 1.0:
        raise UsageError(f"--delta must lie in (0, 1), got {delta:g}")
    check_placement(device, dtype)
    _apply_threads(threads)
    cfg = load_config(config)
    gating = gate or gates_file is not None
    if not gating and (baseline is not None or junit is not None):
        raise UsageError("--baseline and --junit go with --gate (or --gates FILE)")
    gates = (
        _select_gates(gates_file, parse_gates(cfg.gates), f"the config {cfg.path}")
        if gating
        else None
    )
    base_report = _read_baseline(baseline)
    _check_output_folders(json_path, markdown_path, junit)
    from tfbound.transfer.inputs import resolve_transfer_input

    transfer_input = resolve_transfer_input(transfer_report, transfer_c, transfer_beta)
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
    from tfbound.distributed import started
    from tfbound.pipeline.stream import Shard

    if fit_head_first and Shard.from_env().world > 1:
        raise UsageError("--fit-head writes a file: run tfbound fit-head before torchrun")
    if fit_head_first:
        _fit_and_say(cfg, None, None, False)
    with started() as shard, _progress(not quiet and shard.lead) as progress:
        report = run_estimate(
            cfg,
            progress=progress,
            transfer=transfer_input,
            capacity=capacity.value,
            drop_pool_overlap=drop_pool_overlap,
            device=device,
            dtype=dtype,
            shard=shard,
        )
    if not shard.lead:
        return  # under torchrun every process holds the same report; the first one writes it
    data = report.to_dict()
    verdicts = None if gates is None else _evaluate(gates, data, base_report)
    verdict = None if verdicts is None else verdict_markdown(verdicts)
    finish(
        data,
        fmt,
        json_path,
        markdown_path,
        lambda d: report_table(d, verbose),
        lambda d: report_markdown(d, verdict, base_report),
        verdicts,
        junit,
    )


def _fit_and_say(
    cfg: Any, lam: float | None, out: Path | None, force: bool, holdout: bool = False
) -> None:
    from tfbound.headfit import DEFAULT_LAM, fit_head

    lam = DEFAULT_LAM if lam is None else lam
    fit = fit_head(cfg, lam=lam, out=out, force=force, holdout=holdout)
    _stderr().print(
        f"wrote {fit.head} and {fit.record.name} (lam {fit.lam:g}, fixed before the labels were "
        f"seen; n {fit.n}, train accuracy {fit.train_accuracy:.4f})",
        soft_wrap=True,
    )


@app.command("fit-head")
@handle_errors
def fit_head_command(
    config: Annotated[
        Path, typer.Argument(help="A tfbound.yaml, or a folder that holds one.", show_default=False)
    ],
    lam: Annotated[
        float,
        typer.Option(
            "--lam",
            min=0.0,
            help="L2 weight of the logistic head, fixed before the labels are seen "
            "(the sample models' 1e-3).",
        ),
    ] = 1e-3,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write the head (default: the config's head.weights)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a head file tfbound fit-head did not write.")
    ] = False,
    holdout: Annotated[
        bool,
        typer.Option(
            "--holdout",
            help="Fit on S1 only (the config's seeded split): estimate then certifies the head "
            "on S2 like a test set (holdout_bound, usually the tightest certificate).",
        ),
    ] = False,
    stochastic: Annotated[
        bool,
        typer.Option(
            "--stochastic",
            help="Fit tfbound's stochastic head instead, trained on its own PAC-Bayes "
            "certificate (written to bound.stochastic_head or --out); estimate certifies it "
            "beside your head, never as it (docs/bound.md).",
        ),
    ] = False,
) -> None:
    """Fit the L2 logistic head on CONFIG's frozen downstream_train features (float64 LBFGS)
    and write it with a provenance record (same stem, .json); with --stochastic, tfbound's
    stochastic head trained on its own bound."""
    from tfbound.config import load_config

    if stochastic:
        if holdout:
            raise UsageError("--stochastic and --holdout are two different heads: pass one")
        if lam != 1e-3:
            raise UsageError(
                "--lam is the L2 weight of the logistic head; --stochastic trains on its "
                "PAC-Bayes bound (the prior's lambda is bound.prior_lam)"
            )
        _fit_stochastic_and_say(load_config(config), out, force)
        return
    _fit_and_say(load_config(config), lam, out, force, holdout)


def _fit_stochastic_and_say(cfg: Any, out: Path | None, force: bool) -> None:
    from tfbound.headfit import fit_stochastic_head

    fit = fit_stochastic_head(cfg, out=out, force=force)
    _stderr().print(
        f"wrote {fit.head} and {fit.record.name} (stochastic head: mean trained on its own "
        f"PAC-Bayes bound on S2, prior from S1; n {fit.n}, n2 {fit.n2}, Gibbs certificate "
        f"{fit.bound:.4f} (from {fit.start_bound:.4f} on the probe's ray), S2 Gibbs error "
        f"{fit.empirical_gibbs:.4f}, KL {fit.kl:.4g}, mean-head train accuracy "
        f"{fit.mean_train_accuracy:.4f})",
        soft_wrap=True,
    )


@app.command("init")
@handle_errors
def init_command(
    target: Annotated[
        Path,
        typer.Argument(
            help="A Hugging Face model folder, a weights file (.safetensors, .pt) or a folder "
            "holding encoder.safetensors.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="The tfbound.yaml to write, or its folder (default: in TARGET's folder).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
) -> None:
    """Write a commented tfbound.yaml for TARGET, with the data keys to fill in."""
    from tfbound.scaffold import write_scaffold

    path, result = write_scaffold(target, out, force)
    _stderr().print(
        f"wrote {path} ({result.kind}); fill in: {', '.join(result.fill_in)}; "
        f"next: tfbound fit-head {path}, then tfbound estimate {path}",
        soft_wrap=True,
    )


class SpectralOpt(StrEnum):
    exact = "exact"
    estimate = "estimate"


def _is_config(path: Path) -> bool:
    from tfbound.config import CONFIG_FILENAME

    if path.is_dir():
        return (path / CONFIG_FILENAME).is_file()
    return path.suffix in (".yaml", ".yml")


@app.command()
@handle_errors
def inspect(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            help="A .safetensors file, a sharded *.index.json, a folder holding either, a "
            "weights-only .pt/.pth/.bin/.ckpt state dict; or a tfbound.yaml (or a folder with "
            "one): its encoder and head are built and inspected as modules.",
            show_default=False,
        ),
    ],
    reference: Annotated[
        Path | None,
        typer.Option(
            "--reference",
            help="A checkpoint of the same layers (e.g. the pre-trained weights): adds the "
            "distance columns. For a config, defaults to its encoder.reference.",
            show_default=False,
        ),
    ] = None,
    fmt: FormatOpt = OutputFormat.table,
    json_path: JsonOpt = None,
    markdown_path: MarkdownOpt = None,
    sort: Annotated[
        str | None,
        typer.Option(
            help="Order the rows by name or by a measure (largest first): name, spectral_norm, "
            "frobenius_norm, l21_norm, stable_rank, distance_to_reference, n_params.",
            show_default=False,
        ),
    ] = None,
    top: Annotated[
        int | None,
        typer.Option(help="Print only the first N rows (after --sort).", show_default=False),
    ] = None,
    heads: Annotated[
        int | None,
        typer.Option(
            "--heads",
            min=1,
            help="Number of attention heads, where neither the module nor a config.json "
            "beside the checkpoint says.",
            show_default=False,
        ),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 3 if any parameter is not analysed.")
    ] = False,
    spectral: Annotated[
        SpectralOpt,
        typer.Option(
            help="exact: certified spectral norms (Gram eigenvalues); estimate: power "
            "iteration (a lower estimate, status estimated)."
        ),
    ] = SpectralOpt.exact,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
    plot_path: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="Also draw the per-layer spectral norms and stable ranks and the per-head QK/VO "
            "norms (.png, .svg or .pdf; needs matplotlib).",
            show_default=False,
        ),
    ] = None,
    threads: ThreadsOpt = None,
) -> None:
    """Per-layer norms of a checkpoint: spectral, Frobenius, (2,1), stable rank, distance to a
    reference; per-head attention products; skipped parameters; totals and products."""
    from tfbound.inspect import inspect_checkpoint
    from tfbound.render.inspect_render import (
        SORT_KEYS,
        inspect_json,
        inspect_markdown,
        inspect_report,
    )

    _apply_threads(threads)
    if sort is not None and sort not in SORT_KEYS:
        raise UsageError(f"--sort must be one of {', '.join(SORT_KEYS)}, not {sort!r}")
    if top is not None and top < 1:
        raise UsageError(f"--top must be >= 1, got {top}")
    _check_output_folders(json_path, markdown_path)
    if plot_path is not None:
        _check_plot_path(plot_path, "inspect --plot")
    with _progress(not quiet) as progress:
        if _is_config(checkpoint):
            from tfbound.pipeline.inspect_config import inspect_config

            result = inspect_config(checkpoint, reference, heads, strict, spectral.value, progress)
        else:
            result = inspect_checkpoint(
                checkpoint,
                reference=reference,
                heads=heads,
                strict=strict,
                spectral=spectral.value,
                progress=progress,
            )
    if plot_path is not None:
        from tfbound.render.inspect_plot import plot_inspect

        plot_inspect(result, plot_path)
        _stderr().print(f"wrote {plot_path}")
    finish(
        inspect_json(result),
        fmt,
        json_path,
        markdown_path,
        lambda _: inspect_report(result, sort, top),
        lambda _: inspect_markdown(result, sort, top),
    )


@app.command()
@handle_errors
def schema() -> None:
    """Print the JSON Schema of the report."""
    from tfbound.report import report_schema, to_json

    sys.stdout.write(to_json(report_schema()))


@app.command()
@handle_errors
def check(
    report: Annotated[Path, typer.Argument(help="A JSON report.", show_default=False)],
    gates_file: GatesOpt = None,
    baseline: BaselineOpt = None,
    fmt: FormatOpt = OutputFormat.table,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the verdicts as JSON to this file.")
    ] = None,
    markdown_path: MarkdownOpt = None,
    junit: JunitOpt = None,
) -> None:
    """Evaluate gates on a saved REPORT: exit 0 if all pass, 1 if one fails.

    Without --gates, the gates recorded in the report's config are used.
    """
    from tfbound.compare import read_report
    from tfbound.gates import gates_of_report
    from tfbound.render.gates_render import gates_markdown, gates_table

    data = read_report(report)
    gates = _select_gates(gates_file, gates_of_report(data), f"the report {report}")
    base = _read_baseline(baseline)
    verdicts = _evaluate(gates, data, base)
    verdicts["report"] = str(report)
    if baseline is not None:
        verdicts["baseline"] = str(baseline)
    _check_output_folders(json_path, markdown_path, junit)
    finish(verdicts, fmt, json_path, markdown_path, gates_table, gates_markdown)
    _conclude_gates(verdicts, junit, str(report))


@app.command()
@handle_errors
def compare(
    base: Annotated[Path, typer.Argument(help="The baseline JSON report.", show_default=False)],
    cand: Annotated[Path, typer.Argument(help="The candidate JSON report.", show_default=False)],
    fmt: FormatOpt = OutputFormat.table,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the comparison as JSON to this file.")
    ] = None,
    markdown_path: MarkdownOpt = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="Also list the rows that did not change.")
    ] = False,
    plot_path: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="Also draw before/after bars of the terms that changed, one panel each "
            "(.png, .svg or .pdf; needs matplotlib).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Term-by-term (and layer-by-layer) changes from BASE to CAND, largest change first (the
    rows that changed; --all for every row)."""
    from tfbound.compare import compare_reports, read_report
    from tfbound.render.compare_render import compare_markdown, compare_table

    if plot_path is not None:
        _check_plot_path(plot_path, "compare --plot")
    b, c = read_report(base), read_report(cand)
    data = compare_reports(b, c, str(base), str(cand)).to_dict()
    if plot_path is not None:
        from tfbound.render.compare_plot import plot_compare
        from tfbound.render.plot import default_labels

        plot_compare(data, b, c, plot_path, default_labels([base, cand], [b, c]))
        _stderr().print(f"wrote {plot_path}")
    finish(
        data,
        fmt,
        json_path,
        markdown_path,
        lambda d: compare_table(d, show_all),
        lambda d: compare_markdown(d, show_all),
    )


@app.command()
@handle_errors
def plan(
    report: Annotated[Path, typer.Argument(help="A JSON report of estimate.", show_default=False)],
    target: Annotated[
        float | None,
        typer.Option(
            help="A certificate value to reach: the sizes at which each certificate gets there.",
            show_default=False,
        ),
    ] = None,
    fmt: FormatOpt = OutputFormat.table,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the plan as JSON to this file.")
    ] = None,
    markdown_path: MarkdownOpt = None,
) -> None:
    """Project each certificate of REPORT to other labeled and pool sizes, with the rates the
    report observed held fixed (estimated: a projection, not a bound)."""
    from tfbound.compare import read_report
    from tfbound.plan import plan as make_plan
    from tfbound.render.plan_render import plan_markdown, plan_table

    data = make_plan(read_report(report), target=target).to_dict()
    finish(data, fmt, json_path, markdown_path, plan_table, plan_markdown)


@app.command()
@handle_errors
def plot(
    reports: Annotated[
        list[Path], typer.Argument(help="One or more JSON reports.", show_default=False)
    ],
    output: Annotated[
        Path, typer.Option("--out", "-o", "--output", help="Image file (.png, .svg or .pdf).")
    ] = Path("bound.png"),
    label: Annotated[
        list[str] | None,
        typer.Option("--label", help="A name per report (repeat; default: the file names)."),
    ] = None,
    title: Annotated[str | None, typer.Option(help="Figure title.")] = None,
) -> None:
    """Draw the certified bound's terms as stacked bars, one bar per report, with the numbers
    outside the bound (held-out checks, estimated, proxy, diagnostic) drawn apart."""
    from tfbound.compare import read_report
    from tfbound.render.plot import FORMATS, default_labels, plot_reports

    if output.suffix.lower().lstrip(".") not in FORMATS:
        raise UsageError(f"--out must end in one of {', '.join('.' + f for f in FORMATS)}")
    if label and len(label) != len(reports):
        raise UsageError(f"{len(label)} --label value(s) for {len(reports)} report(s)")
    _check_output_folders(output)
    data = [read_report(p) for p in reports]
    names = list(label) if label else default_labels(reports)
    plot_reports(list(zip(names, data, strict=True)), output, title=title)
    _stderr().print(f"wrote {output}")


@app.command()
@handle_errors
def transfer(
    config: Annotated[
        Path,
        typer.Argument(
            help="A transfer.yaml, a tfbound.yaml (with or without a 'transfer:' section), or a "
            "folder holding one.",
            show_default=False,
        ),
    ],
    checkpoints: Annotated[
        list[Path] | None,
        typer.Option(
            "--checkpoints",
            help="A folder of pre-training checkpoints (seed<k>/epoch<e>/encoder.safetensors) "
            "to add to the family (repeat for several).",
            show_default=False,
        ),
    ] = None,
    fmt: FormatOpt = OutputFormat.table,
    json_path: JsonOpt = None,
    markdown_path: MarkdownOpt = None,
    plot_path: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="Also draw E_T against E_U with the fit and the envelope (.png, .svg or .pdf; "
            "needs matplotlib).",
            show_default=False,
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
    threads: ThreadsOpt = None,
) -> None:
    """Estimate (C, beta) over a family of frozen representations: per-member E_U and E_T, the
    fit, the envelope C(beta) and heterogeneity diagnostics (bound-spec 6.2 and 7)."""
    from tfbound.render.transfer_render import (
        plot_transfer,
        require_matplotlib,
        transfer_markdown,
        transfer_table,
    )
    from tfbound.transfer import load_transfer_config, run_transfer

    _apply_threads(threads)
    if plot_path is not None:
        if plot_path.suffix.lower() not in (".png", ".svg", ".pdf"):
            raise UsageError("--plot must end in .png, .svg or .pdf")
        require_matplotlib()
    _check_output_folders(json_path, markdown_path, plot_path)
    cfg = load_transfer_config(config, extra_checkpoint_roots=tuple(checkpoints or ()))
    with _progress(not quiet) as progress:
        report = run_transfer(cfg, progress=progress)
    data = report.to_dict()
    if plot_path is not None:
        plot_transfer(data, plot_path)
        _stderr().print(f"wrote {plot_path}")
    finish(data, fmt, json_path, markdown_path, transfer_table, transfer_markdown)


class PretrainKind(StrEnum):
    ce = "ce"
    mae = "mae"


@app.command()
@handle_errors
def pretrain(
    kind: Annotated[
        PretrainKind,
        typer.Argument(
            help="ce: Context Encoder MLP; mae: Masked Autoencoder ViT.", show_default=False
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out-dir", help="Folder to write (absent or empty, or --force).", show_default=False
        ),
    ],
    radreg: Annotated[
        float, typer.Option("--radreg", min=0.0, help="RadReg weight lambda (0: none).")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the initialisation and batches.")] = 0,
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Epochs (default: the sample recipe's 600).")
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(min=0.0, help="Adam learning rate (default: 3e-4 for ce, 3e-3 for mae)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Pre-training batch size.")] = 50,
    radreg_draws: Annotated[
        int, typer.Option(min=1, help="K, the fixed RadReg sign vectors.")
    ] = 256,
    radreg_seed: Annotated[int, typer.Option(help="Seed of the RadReg sign vectors.")] = 0,
    data: Annotated[
        Path | None,
        typer.Option(
            help="An .npz with the sample data's keys (pretrain_train_x, downstream_train_x/_y; "
            "optional pretrain_val_x, downstream_test_x/_y, radreg_x, downstream_pool_x). "
            "Default: the bundled 8x8 digits.",
            show_default=False,
        ),
    ] = None,
    encoder_candidates: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="J of bound-spec section 2 written to the config (default: 20 on the bundled "
            "digits, whose recipes were picked partly on the labeled split; else 1).",
            show_default=False,
        ),
    ] = None,
    threads: Annotated[
        int, typer.Option(min=1, help="Torch threads (results are reproducible per count).")
    ] = 1,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an --out-dir that tfbound pretrain wrote.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
) -> None:
    """Pre-train an encoder and decoder (optionally with RadReg), fit a linear head on the frozen
    features, and write a folder that `tfbound estimate` reads."""
    import torch

    from tfbound.training.folder import pretrain_folder

    torch.set_num_threads(threads)
    with _progress(not quiet) as progress:
        summary = pretrain_folder(
            kind.value,
            out,
            data=data,
            radreg=radreg,
            seed=seed,
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            radreg_draws=radreg_draws,
            radreg_seed=radreg_seed,
            encoder_candidates=encoder_candidates,
            force=force,
            progress=progress,
        )
    test_acc = summary.get("downstream_test_accuracy")
    shown = "" if test_acc is None else f", test accuracy {test_acc:.4f}"
    _stderr().print(
        f"wrote {out} (train accuracy {summary['downstream_train_accuracy']:.4f}{shown}); "
        f"next: tfbound estimate {out}",
        soft_wrap=True,
    )


def main() -> None:
    """The ``tfbound`` command: usage errors are one line on stderr with exit 2 (no help box)."""
    import warnings

    if "--debug" not in sys.argv:  # library warnings (torch, numpy) would add lines to stderr
        warnings.simplefilter("ignore")
    try:
        code = app(prog_name="tfbound", standalone_mode=False)
    except Exception as exc:  # click's UsageError (typer vendors click): exit_code 2
        if getattr(exc, "exit_code", None) == EXIT_USAGE and hasattr(exc, "format_message"):
            message = " ".join(str(exc.format_message()).split())[:300]
            sys.stderr.write(f"error: {message} (see 'tfbound --help')\n")
            sys.exit(EXIT_USAGE)
        if type(exc).__name__ == "Abort":  # Ctrl-C at a prompt
            sys.stderr.write("aborted\n")
            sys.exit(130)
        raise
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERNAL", "app", "emit", "handle_errors", "main"]
