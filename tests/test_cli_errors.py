"""Bad input on the command line: every case ends in one line on stderr (``error: ...``) naming the file or
option, with the right exit status, no traceback, nothing on stdout, and nothing half-written. Also: run
folders are claimed exclusively, files get the permissions the umask gives, Ctrl-C says what it stopped
and what it kept, output piped to a file is not wrapped, the Python API, and random input to the range
readers and option parsers."""

from __future__ import annotations

import errno
import inspect
import json
import os
import signal
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import quantbench
from quantbench.cli import main
from quantbench.errors import QuantbenchError, first_line
from quantbench.ranges import (
    DynamicRanges,
    read_range_text,
    read_ranges,
    read_ranges_json,
    read_trt_cache,
    write_range_text,
    write_trt_cache,
)
from tests.conftest import photo_folder, tiny_conv_model

Patch = Callable[[pytest.MonkeyPatch], None]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Good and bad input files, shared (read only) by every case."""
    root = tmp_path_factory.mktemp("inputs")
    tiny_conv_model(root / "m.onnx")
    photo_folder(root / "imgs", 6)
    (root / "empty").mkdir()
    (root / "notes.txt").write_text("not a folder\n")
    (root / "bad.onnx").write_bytes(b"not an ONNX model")
    (root / "stray.onnx").write_text("x\n")  # protobuf reads it as an empty model
    table = DynamicRanges({"input": 1.0, "conv1": 2.0})
    write_trt_cache(table, root / "r.cache")
    write_range_text(table, root / "r.txt")
    lines = (root / "r.cache").read_text().splitlines()
    (root / "headerless.cache").write_text("\n".join(lines[1:]) + "\n")
    (root / "bad.txt").write_text("input: abc\n")
    (root / "dup.txt").write_text("input:1\ninput:2\n")
    (root / "neg.txt").write_text("input:-1\n")
    (root / "empty.cache").write_text("")
    (root / "bin.cache").write_bytes(b"\xff\xfe\x00\x81")
    (root / "bad.json").write_text('{"ranges": {"input": "x"}}')
    (root / "cut.json").write_text('{"ranges": {"input": 1')
    (root / "labels_none.txt").write_text("nosuch.png,1\n")
    (root / "labels_index.txt").write_text("img000.png,1\nimg001.png,x\n")
    (root / "labels_negative.txt").write_text("img000.png,-1\n")
    return root


def _read_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Writing in the output folder fails as on a read-only file system."""
    real = tempfile.mkstemp

    def mkstemp(*args: object, prefix: str | None = None, **kwargs: object) -> tuple[int, str]:
        if prefix and prefix.startswith(".quantbench-probe-"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(*args, prefix=prefix, **kwargs)  # type: ignore[call-overload,no-any-return]

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def _runtime_fails_silently(monkeypatch: pytest.MonkeyPatch) -> None:
    """ONNX Runtime raises an exception with an empty message on the calibration pass."""
    import onnxruntime

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("")

    monkeypatch.setattr(onnxruntime.InferenceSession, "run_with_ort_values", fail)


@dataclass(frozen=True)
class Case:
    """One bad command line: ``args`` ({in}: the inputs folder, {out}: an empty folder of this case), the
    exit status, and the fragments the one line on stderr must hold (the file or option at fault, what
    is wrong)."""

    name: str
    args: tuple[str, ...]
    says: tuple[str, ...]
    code: int = 2
    patch: Patch | None = None


RUN = ("run", "--model", "{in}/m.onnx", "--images", "{in}/imgs", "--n", "2", "--out", "{out}/runs")
SENS = ("sensitivity", "--model", "{in}/m.onnx", "--images", "{in}/imgs", "--n", "2", "--out", "{out}/runs")
CONVERT = ("ranges", "convert", "{in}/r.cache", "--to")
CAL = ("calibrate", "--model", "{in}/m.onnx", "--images", "{in}/imgs", "--n", "2", "--out", "{out}/cal")

CASES = [
    # the model
    Case("model missing", ("run", "--model", "{in}/nosuch.onnx", "--images", "{in}/imgs"),
         ("model file not found", "nosuch.onnx", "--model")),
    Case("model is a folder", ("calibrate", "--model", "{in}/imgs", "--images", "{in}/imgs"),
         ("imgs is a folder", "--model")),
    Case("model not ONNX", (*RUN[:2], "{in}/bad.onnx", *RUN[3:]), ("bad.onnx", "not a readable ONNX model")),
    Case("model read as empty", (*RUN[:2], "{in}/stray.onnx", *RUN[3:]), ("stray.onnx", "no graph in it")),
    Case("model option missing", ("run", "--images", "{in}/imgs"), ("missing option '--model'", "--help")),
    Case("unknown option", (*RUN, "--modl", "x"), ("no such option: --modl", "quantbench run --help")),
    Case("not a number", (*RUN, "--n", "abc"), ("'--n'", "integer")),
    Case("no images at all", ("run", "--model", "{in}/m.onnx"), ("give --images",)),
    # sample folders (item 7)
    Case("images missing", (*RUN[:3], "--images", "{in}/nosuch"),
         ("--images", "nosuch", "no such folder")),
    Case("images is a file", (*RUN[:3], "--images", "{in}/notes.txt"),
         ("--images", "notes.txt", "is a file")),
    Case("images empty", (*RUN[:3], "--images", "{in}/empty"), ("no images", "point --images at")),
    Case("eval images missing", (*RUN, "--eval-images", "nosuchdir"),
         ("--eval-images nosuchdir", "no such")),
    Case("eval images empty", (*RUN, "--eval-images", "{in}/empty"), ("point --eval-images at",)),
    Case("calibrate images missing", (*CAL[:3], "--images", "{in}/nosuch"), ("--images", "nosuch")),
    Case("sensitivity eval images missing", (*SENS, "--eval-images", "{in}/nosuch"), ("--eval-images",)),
    # labels (item 3)
    Case("labels missing", (*RUN, "--labels", "{in}/nosuch.csv"), ("labels file not found", "--labels")),
    Case("labels match no image", (*RUN, "--labels", "{in}/labels_none.txt"),
         ("--labels", "labels_none.txt", "none of its 1 names matches", "nosuch.png")),
    Case("labels index not a number", (*RUN, "--labels", "{in}/labels_index.txt"),
         ("labels_index.txt:2", "not an integer")),
    Case("labels index negative", (*RUN, "--labels", "{in}/labels_negative.txt"),
         ("labels_negative.txt:1", "negative")),
    # range files given to run (items 5, 7)
    Case("ranges missing", (*RUN, "--ranges", "{in}/nosuch.cache"), ("range file not found", "--ranges")),
    Case("ranges without header", (*RUN, "--ranges", "{in}/headerless.cache"),
         ("headerless.cache:1", "no cache header", "TRT-")),
    Case("ranges not a number", (*RUN, "--ranges", "{in}/bad.txt"), ("bad.txt:1", "not a decimal number")),
    Case("ranges json cut short", (*RUN, "--ranges", "{in}/cut.json"), ("cut.json:1", "invalid JSON")),
    # output folders (item 6)
    Case("run out is a file", (*RUN[:-1], "{in}/notes.txt"), ("--out", "notes.txt", "is a file")),
    Case("run out under /proc", (*RUN[:-1], "/proc/quantbench-out"),
         ("--out /proc/quantbench-out", "cannot")),
    Case("run out read-only", RUN, ("--out", "runs", "Read-only file system"), patch=_read_only),
    Case("sensitivity out is a file", (*SENS[:-1], "{in}/notes.txt"), ("--out", "notes.txt", "is a file")),
    Case("calibrate out inside a file", (*CAL[:-1], "{in}/notes.txt/sub"), ("--out", "which is a file")),
    Case("calibrate out under /proc", (*CAL[:-1], "/proc/quantbench-out"), ("--out /proc/quantbench-out",)),
    Case("calibrate out read-only", CAL, ("--out", "cal", "Read-only file system"), patch=_read_only),
    Case("convert out under /proc", (*CONVERT, "txt", "--out", "/proc/x.txt"), ("--out /proc", "cannot")),
    Case("convert out is a folder", (*CONVERT, "txt", "--out", "{in}/empty"), ("--out", "empty is a folder")),
    Case("convert out inside a file", (*CONVERT, "txt", "--out", "{in}/notes.txt/r.txt"),
         ("--out", "notes.txt is a file")),
    # option values
    Case("precisions empty", (*RUN, "--precisions", ""), ("--precisions names none of",)),
    Case("precisions unknown", (*RUN, "--precisions", "fp64"), ("unknown precision 'fp64'",)),
    Case("method unknown", (*RUN, "--method", "foo"), ("unknown calibration method 'foo'",)),
    Case("method parameter out of range", (*CAL, "--method", "percentile:200"),
         ("'percentile:200'", "(0, 100]")),
    Case("size zero", (*RUN, "--size", "0"), ("--size", "'0'")),
    Case("size not a size", (*RUN, "--size", "big"), ("--size", "'big'")),
    Case("mean not numbers", (*RUN, "--mean", "1,x"), ("--mean", "comma-separated numbers")),
    Case("bench batch not numbers", (*RUN, "--bench-batch", "x"), ("--bench-batch", "'x'")),
    Case("bench batch zero", (*RUN, "--bench-batch", "0"), ("--bench-batch",)),
    Case("workers zero", (*RUN, "--workers", "0"), ("--workers must be at least 1",)),
    Case("n zero", (*CAL[:-4], "--n", "0"), ("--n must be at least 1",)),
    Case("task unknown", (*RUN, "--task", "foo"), ("--task", "unknown kind 'foo'")),
    Case("task option unknown", (*RUN, "--task-option", "colour=red"),
         ("--task-option", "unknown key 'colour'")),
    Case("target without int8", (*RUN, "--target-agreement", "99", "--precisions", "fp32"),
         ("--target-agreement", "need int8 in --precisions")),
    Case("bias correction on no image", (*RUN, "--bias-correction-images", "0"),
         ("--bias-correction-images",)),
    Case("weight rounding unknown", (*RUN, "--weight-rounding", "stochastic"),
         ("--weight-rounding", "'stochastic'", "nearest, adaptive")),
    Case("cpu flavour unknown", (*RUN, "--cpu-flavour", "fastest"),
         ("--cpu-flavour", "'fastest'", "exact, fast")),
    Case("backend unknown", (*RUN, "--backend", "nosuch"), ("--backend", "'nosuch'")),
    Case("metric file missing", (*RUN, "--metric", "{in}/nosuch.py:fn"), ("--metric", "nosuch.py")),
    Case("plugin library missing", (*RUN, "--plugins", "{in}/nosuch.so"),
         ("plugin library not found", "--plugins")),
    Case("view unknown", (*SENS, "--view", "sideways"), ("--view", "sideways")),
    Case("sensitivity two methods", (*SENS, "--method", "entropy,mse"), ("--method takes one",)),
    # the ranges commands (item 5)
    Case("show missing", ("ranges", "show", "{in}/nosuch.cache"), ("nosuch.cache", "cannot read")),
    Case("show not text", ("ranges", "show", "{in}/bin.cache"), ("bin.cache:1", "not UTF-8")),
    Case("show empty", ("ranges", "show", "{in}/empty.cache"), ("empty.cache:1",)),
    Case("show headerless cache", ("ranges", "show", "{in}/headerless.cache"),
         ("headerless.cache:1", "no cache header", "add one as its first line")),
    Case("show amax not a number", ("ranges", "show", "{in}/bad.json"), ("bad.json", "'input'", "amax")),
    Case("show repeated tensor", ("ranges", "show", "{in}/dup.txt"), ("dup.txt:2", "appears twice")),
    Case("show negative amax", ("ranges", "show", "{in}/neg.txt"), ("neg.txt:1", "must be finite and > 0")),
    Case("show no file", ("ranges", "show"), ("missing argument", "quantbench ranges show --help")),
    Case("convert to unknown format", ("ranges", "convert", "{in}/r.txt", "--to", "yaml"),
         ("--to", "'yaml'")),
    Case("convert unknown algorithm", ("ranges", "convert", "{in}/r.txt", "--to", "cache", "--algorithm",
                                       "Foo"), ("--algorithm", "'Foo'", "TensorRT ignores")),
    Case("convert onto itself", (*CONVERT, "cache"), ("already a .cache",)),
    Case("diff second missing", ("ranges", "diff", "{in}/r.cache", "{in}/nosuch.txt"),
         ("nosuch.txt", "cannot read")),
    Case("report of no run", ("report", "{in}/empty"), ("results.json", "not found")),
    # an exception with an empty message inside collection (item 9)
    Case("runtime error without message", CAL, ("ONNX Runtime failed", "RuntimeError"),
         patch=_runtime_fails_silently),
]  # fmt: skip


def _snapshot(*roots: Path) -> set[tuple[str, int]]:
    """Every file and folder under ``roots`` with its size (folders: -1)."""
    found = set()
    for root in roots:
        for path in root.rglob("*"):
            found.add((str(path), path.stat().st_size if path.is_file() else -1))
    return found


def _expand(args: tuple[str, ...], inputs: Path, out: Path) -> list[str]:
    """``args`` with {in} and {out} filled in."""
    return [arg.replace("{in}", str(inputs)).replace("{out}", str(out)) for arg in args]


def invoke(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the command line in this process: (exit status, stdout, stderr)."""
    argv = sys.argv
    sys.argv = ["quantbench", *args]
    try:
        with pytest.raises(SystemExit) as exited:
            main()
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    code = exited.value.code
    return code if isinstance(code, int) else 0, out, err


def test_the_table_covers_enough_cases() -> None:
    assert len(CASES) >= 40
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(
    case: Case,
    inputs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # default output folders would land here
    args = _expand(case.args, inputs, tmp_path)
    before = _snapshot(inputs, tmp_path)
    if case.patch is not None:
        case.patch(monkeypatch)
    code, out, err = invoke(args, capsys)
    assert code == case.code, err
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err and out == ""  # no blank line either
    for fragment in case.says:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    assert _snapshot(inputs, tmp_path) == before  # nothing half-written, no empty folder left


# ---------------------------------------------------------------------------------------------------------
# a real (tiny) run: exclusive run folders, permissions, partly labelled images, unwrapped output


@pytest.fixture(scope="module")
def tiny_run(inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One ``quantbench run`` (FP32 only) with labels for some of the images, into a folder with a long
    path, under umask 027: (its output folder, its stdout)."""
    labels = inputs / "labels_some.txt"
    labels.write_text("".join(f"img{i:03d}.png,{i % 2}\n" for i in range(0, 6, 2)))
    out = tmp_path_factory.mktemp("run") / ("a-folder-with-a-long-name-" * 4) / "runs"
    args = ["run", "--model", str(inputs / "m.onnx"), "--eval-images", str(inputs / "imgs"), "--labels",
            str(labels), "--precisions", "fp32", "--bench-runs", "1", "--bench-seconds", "0",
            "--out", str(out)]  # fmt: skip
    with tempfile.TemporaryFile("w+") as capture:  # stdout as a file, as `quantbench run ... > log` has it
        old_mask, argv, stdout = os.umask(0o027), sys.argv, sys.stdout
        sys.argv, sys.stdout = ["quantbench", *args], capture
        try:
            with pytest.raises(SystemExit) as exited:
                main()
        finally:
            os.umask(old_mask)
            sys.argv, sys.stdout = argv, stdout
        capture.seek(0)
        text = capture.read()
    assert exited.value.code == 0, text
    return out, text


def test_output_piped_is_not_wrapped_and_ends_with_the_report_path(tiny_run: tuple[Path, str]) -> None:
    out, text = tiny_run
    (run_dir,) = out.iterdir()
    lines = text.splitlines()
    assert lines[-1] == f"report: {run_dir / 'report.html'}"
    assert f"results in {run_dir} (" in text
    assert len(str(run_dir)) > 80 and all(line.strip() for line in lines)


def test_one_variant_is_said_in_the_singular(tiny_run: tuple[Path, str]) -> None:
    assert "compared 1 variant of m on 6 held-out samples" in tiny_run[1]


def test_files_written_get_the_permissions_of_the_umask(tiny_run: tuple[Path, str]) -> None:
    out, _ = tiny_run
    files = [path for path in out.rglob("*") if path.is_file()]
    assert any(path.name == "results.json" for path in files)
    assert {stat.S_IMODE(path.stat().st_mode) for path in files} == {0o640}  # 0666 less umask 027


def test_images_without_a_label_are_counted_and_named(tiny_run: tuple[Path, str]) -> None:
    out, _ = tiny_run
    (run_dir,) = out.iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    notes = [note for note in results["notes"] if note.startswith("--labels")]
    assert len(notes) == 1 and "3 of 6 held-out images have no label" in notes[0]
    assert "img001.png" in notes[0] and "accuracy is over the other 3" in notes[0]
    assert "nan" not in json.dumps(results).lower().replace("nan_", "")


def test_atomic_writes_honour_the_umask(tmp_path: Path) -> None:
    from quantbench.fileio import write_text_atomic

    for mask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        old = os.umask(mask)
        try:
            write_text_atomic(tmp_path / f"{mask:o}.txt", "x")
            with open(tmp_path / f"{mask:o}-plain.txt", "w") as plain:
                plain.write("x")
        finally:
            os.umask(old)
        assert stat.S_IMODE((tmp_path / f"{mask:o}.txt").stat().st_mode) == mode
        assert stat.S_IMODE((tmp_path / f"{mask:o}-plain.txt").stat().st_mode) == mode


def test_run_folders_are_claimed_exclusively(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from quantbench.flows.context import new_run_folder

    monkeypatch.setattr(time, "strftime", lambda fmt: "20250101-120000")
    (tmp_path / "m-20250101-120000").mkdir()  # an earlier run of the same second
    claimed: list[Path] = []
    lock = threading.Lock()

    def claim() -> None:
        path = new_run_folder(tmp_path, Path("m.onnx"))
        with lock:
            claimed.append(path)

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    names = sorted(path.name for path in claimed)
    assert len(set(names)) == 8 and all(path.is_dir() for path in claimed)
    assert names == sorted(f"m-20250101-120000-{k}" for k in range(1, 9))


# ---------------------------------------------------------------------------------------------------------
# Ctrl-C


def _interrupt_in(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> None:
    """Make ``module.name`` send this process SIGINT, as Ctrl-C does, once the step before it is done."""

    def interrupted(*args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler raises before this ends
        raise AssertionError("SIGINT did not interrupt")

    monkeypatch.setattr(module, name, interrupted)


def test_ctrl_c_says_what_it_stopped_and_kept(
    inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import quantbench.flows.variants as variants

    _interrupt_in(monkeypatch, variants, "correction_feeds")
    code, out, err = invoke(_expand(RUN, inputs, tmp_path), capsys)
    assert code == 130 and err.count("\n") == 1 and "Traceback" not in err and out == ""
    (run_dir,) = (tmp_path / "runs").iterdir()
    kept = f"kept the unfinished run folder {run_dir} (every file in it is complete)"
    assert err == f"error: interrupted while collecting; {kept}\n"
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    assert (run_dir / "ranges" / "entropy.cache").is_file() and not (run_dir / "results.json").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_ctrl_c_before_anything_was_written_leaves_nothing(
    inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import quantbench.flows.ranges as ranges

    _interrupt_in(monkeypatch, ranges, "gather_ranges")
    monkeypatch.setattr("quantbench.flows.run.gather_ranges", ranges.gather_ranges, raising=False)
    args = _expand(RUN, inputs, tmp_path)
    code, _, err = invoke(args, capsys)
    assert code == 130 and err == "error: interrupted; nothing was left half-written\n"
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------------------------------------
# the help, `quantbench methods`, --view both, the first line of a message


def test_help_shows_no_bool_type_beside_flags(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("run", "sensitivity", "calibrate"):
        code, out, _ = invoke([command, "--help"], capsys)
        assert code == 0 and "--help" in out, command
        assert "<bool>" not in out, command
        assert "<int>" in out  # other types are still shown


def test_methods_print_no_markup(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = invoke(["methods"], capsys)
    assert code == 0 and "percentile" in out and "percent %" in out
    assert "``" not in out and ":func:" not in out and "`" not in out


def test_view_both_is_only_and_without() -> None:
    from quantbench.cli.options import api_keywords

    assert api_keywords({"view": "both"})["views"] == ["only", "without"]
    assert api_keywords({"view": "without"})["views"] == ["without"]


def test_sensitivity_takes_view_both(
    inputs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    args = _expand(SENS, inputs, tmp_path)
    code, out, err = invoke([*args, "--view", "both", "--eval-n", "2", "--no-tensors"], capsys)
    assert code == 0, err
    (run_dir,) = (tmp_path / "runs").iterdir()
    ranking = json.loads((run_dir / "sensitivity.json").read_text())["ranking"]
    assert ranking and all(row["rel_l2"] is not None and row["without_rel_l2"] is not None for row in ranking)
    assert "on 2 held-out samples" in out


def test_first_line_of_an_empty_message_is_the_type() -> None:
    assert first_line(RuntimeError("")) == "RuntimeError"
    assert first_line(ValueError("  \n ")) == "ValueError"
    assert first_line(OSError("disk full\nmore detail")) == "disk full"


# ---------------------------------------------------------------------------------------------------------
# the Python API


def test_api_shows_real_signatures() -> None:
    for function, first in ((quantbench.run, "images"), (quantbench.calibrate, "images")):
        parameters = inspect.signature(function).parameters
        assert list(parameters)[:2] == ["model", first]
        assert {"methods", "out", "seed", "progress"} <= set(parameters)
        assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    assert inspect.signature(quantbench.calibrate).parameters["images"].default is inspect.Parameter.empty


def test_api_results_have_short_reprs(inputs: Path, tmp_path: Path, tiny_run: tuple[Path, str]) -> None:
    from quantbench.flows.run import RunResult
    from quantbench.variant import Variant

    result = quantbench.calibrate(inputs / "m.onnx", inputs / "imgs", n=2, out=tmp_path / "cal")
    assert repr(result) == (
        f"CalibrationResult(out_dir={str(tmp_path / 'cal')!r}, methods=['entropy'], tensors=4, images=2, "
        "reused=False)"
    )
    (run_dir,) = tiny_run[0].iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    variant = Variant("fp32", "fp32", run_dir / "m.onnx", run_dir / "m.onnx")
    text = repr(RunResult(run_dir, results, [variant]))
    assert text == f"RunResult(run_dir={str(run_dir)!r}, variants=['fp32'])" and len(text) < 400


def test_api_refuses_a_comma_string_for_a_list(inputs: Path) -> None:
    with pytest.raises(
        QuantbenchError, match=r"methods takes a list, e\.g\. methods=\[\.\.\.\], not 'entropy,mse'"
    ):
        quantbench.calibrate(inputs / "m.onnx", inputs / "imgs", methods="entropy,mse")


# ---------------------------------------------------------------------------------------------------------
# random input: range readers and option parsers either succeed or raise QuantbenchError

_LINE = st.one_of(
    st.from_regex(r"TRT-[0-9]{0,7}-[A-Za-z0-9_]{0,12}", fullmatch=True),
    st.from_regex(r"[^\n:]{0,8}:[ ]?[0-9a-fA-FxXeE.+-]{0,12}", fullmatch=True),
    st.text(max_size=16),
)
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
_FILE_BYTES = st.one_of(
    st.binary(max_size=200),
    st.lists(_LINE, max_size=6).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")),
    st.dictionaries(st.sampled_from(["ranges", "format", "format_version", "trt_version", "image_count"]),
                    _JSON_VALUES, max_size=3).map(lambda d: json.dumps(d).encode()),
)  # fmt: skip
_READERS = (read_ranges, read_trt_cache, read_range_text, read_ranges_json)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("random")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_FILE_BYTES, suffix=st.sampled_from([".cache", ".txt", ".json", ".bin"]))
def test_range_readers_take_any_bytes(scratch: Path, data: bytes, suffix: str) -> None:
    from quantbench.evaluation.metrics import read_labels

    path = scratch / f"random{suffix}"
    path.write_bytes(data)
    for reader in (*_READERS, read_labels):
        try:
            result = reader(path)
        except QuantbenchError as exc:
            assert str(exc) and "\n" not in str(exc).strip()
        else:
            assert result


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=24), other=st.text(max_size=24))
def test_option_parsers_take_any_string(text: str, other: str) -> None:
    from quantbench.calibration.registry import parse_method
    from quantbench.cli.options import api_keywords, parse_floats, parse_size, split_list
    from quantbench.evaluation.kinds import parse_task
    from quantbench.evaluation.tasks import Task
    from quantbench.export.variants import parse_precisions
    from quantbench.search.mixed_precision import parse_target

    options = {"size": text, "mean": other, "std": text, "view": other, "method": text, "bench_batch": other}
    calls: list[Callable[[], object]] = [
        lambda: parse_size(text),
        lambda: parse_floats(text, "--mean"),
        lambda: parse_method(text),
        lambda: parse_precisions(split_list(text)),
        lambda: api_keywords({**options, "precisions": other}),
        lambda: parse_target(None, None, text),
        lambda: parse_task([text], ["output"]),
        lambda: Task.parse([text], [other]),
    ]
    for call in calls:
        try:
            call()
        except QuantbenchError as exc:
            assert str(exc)


_OPTIONS = ("--size", "--mean", "--std", "--method", "--precisions", "--bench-batch", "--n",
            "--preset", "--channels", "--layout", "--task", "--task-option", "--target", "--tolerance",
            "--batch")  # fmt: skip


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(_OPTIONS), value=st.text(max_size=16))
def test_any_option_value_ends_in_one_line(
    option: str, value: str, scratch: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = scratch / "no-such-model.onnx"  # whatever parses, nothing runs
    code, out, err = invoke(
        ["run", "--model", str(model), "--out", str(scratch / "out"), option, value], capsys
    )
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and out == ""
    assert not (scratch / "out").exists()


@pytest.fixture(autouse=True)
def _no_leftover_signal_handler() -> Iterator[None]:
    yield
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
