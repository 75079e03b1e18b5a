"""The accuracy-vs-speed report: one self-contained ``report.html`` per run, rendered from ``results.json``.

The page has its CSS inline and its figures embedded as SVG data URIs, so it opens anywhere without a
network. It is rendered by Jinja2 with autoescaping on: every name that comes from the model or the file
system is shown as text. The page holds no script, and its content security policy allows none.

matplotlib, pandas and Jinja2 are imported only when a report is rendered.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from quantbench.errors import QuantbenchError
from quantbench.fileio import write_text_atomic
from quantbench.report.results import FORMAT, FORMAT_VERSION

REPORT_NAME = "report.html"
RESULTS_NAME = "results.json"
TEMPLATE = "report.html.j2"

__all__ = ["REPORT_NAME", "check_results", "load_results", "render_report", "write_report"]


def _results_path(run_dir: str | os.PathLike[str]) -> Path:
    path = Path(run_dir)
    return path if path.suffix == ".json" and not path.is_dir() else path / RESULTS_NAME


def check_results(results: Any, source: str = RESULTS_NAME) -> dict[str, Any]:
    """Check that ``results`` is a ``results.json`` this version can render.

    Args:
        results: the parsed JSON.
        source: the file it came from, named in errors.

    Returns:
        ``results``, unchanged.

    Raises:
        QuantbenchError: not a quantbench results file, another format version, or a part the report
            needs is missing.
    """
    if not isinstance(results, dict) or results.get("format") != FORMAT:
        raise QuantbenchError(f'{source}: not a quantbench results file (no "format": "{FORMAT}")')
    version = results.get("format_version")
    if version != FORMAT_VERSION:
        raise QuantbenchError(
            f"{source}: results format version {version}, but this quantbench reads version "
            f"{FORMAT_VERSION}; render it with the quantbench that wrote it, or run again"
        )
    shape = {"manifest": dict, "model": dict, "ranges": dict, "variants": list}
    for key, kind in shape.items():
        if not isinstance(results.get(key), kind):
            raise QuantbenchError(
                f"{source}: {key!r} is missing or not a {kind.__name__}; the file is damaged"
            )
    if not isinstance(results["model"].get("comparison_outputs"), dict):
        raise QuantbenchError(f"{source}: 'model.comparison_outputs' is missing; the file is damaged")
    if not all(isinstance(v, dict) for v in results["variants"]):
        raise QuantbenchError(f"{source}: an entry of 'variants' is not an object; the file is damaged")
    return results


def load_results(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check the ``results.json`` of a run folder.

    Args:
        run_dir: the run folder, or the ``results.json`` file itself.

    Returns:
        The parsed results.

    Raises:
        QuantbenchError: the file is missing, unreadable, not JSON, or not a results file this version reads.
    """
    path = _results_path(run_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise QuantbenchError(f"{path}: not found; give the folder a 'quantbench run' wrote") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise QuantbenchError(f"{path}: cannot be read ({exc.__class__.__name__}: {exc})") from None
    try:
        results = json.loads(text)
    except json.JSONDecodeError as exc:
        raise QuantbenchError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); the file is damaged"
        ) from None
    return check_results(results, str(path))


def render_report(results: dict[str, Any]) -> str:
    """The report as one HTML page.

    Args:
        results: the content of ``results.json``.

    Returns:
        The page, with its CSS and figures inline.

    Raises:
        QuantbenchError: ``results`` is not a results file this version reads.
    """
    import jinja2

    from quantbench.report.sections import build_context

    check_results(results)
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("quantbench.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return environment.get_template(TEMPLATE).render(**build_context(results))


def write_report(run_dir: str | os.PathLike[str], results: dict[str, Any] | None = None) -> Path:
    """Render the report of a run and write it (atomically) into its folder as ``report.html``.

    Args:
        run_dir: the run folder (or its ``results.json``; the report goes beside it).
        results: the run's results, when already in memory; default: read from ``results.json``.

    Returns:
        The path of the report.

    Raises:
        QuantbenchError: ``results.json`` is missing, damaged or of another format version, or (when read
            from the file) holds a value of a type or form the report cannot show.
    """
    source = _results_path(run_dir)
    if results is not None:
        page = render_report(results)
    else:
        results = load_results(source)
        try:
            page = render_report(results)
        except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
            raise QuantbenchError(
                f"{source}: a value has an unexpected type or form ({type(exc).__name__}: {exc}); "
                "was the file edited? 'quantbench run' writes it afresh"
            ) from None
    path = source.parent / REPORT_NAME
    write_text_atomic(path, page)
    return path
