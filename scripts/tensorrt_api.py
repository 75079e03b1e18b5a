"""Extract the Python API of TensorRT's bindings wheels into JSON, without TensorRT's libraries.

The ``tensorrt-cu1x-bindings`` wheels hold the pybind11 module ``tensorrt_bindings/tensorrt.so``; it
needs ``libnvinfer``, ``libnvinfer_plugin`` and ``libnvonnxparser`` only for nine factory functions
(``createInferBuilder_INTERNAL`` ...), which importing the module does not call. This script compiles a
stand-in library that defines those nine symbols (each returns null / 0), imports the real module
against it in a child process and records every class, enum, function and member with its pybind11
signature. The JSON files under ``tests/data/tensorrt_api/`` are its output; the conformance tests
(``tests/test_tensorrt_api.py``) run quantbench's TensorRT code against fakes generated from them.

Usage::

    python scripts/tensorrt_api.py download DIR        # the pinned wheels, with pip download
    python scripts/tensorrt_api.py dump DIR [OUT]      # every wheel in DIR -> OUT/<version>.json
    python scripts/tensorrt_api.py check DIR [OUT]     # dump to a temporary folder, compare with OUT
    python scripts/tensorrt_api.py stubs DIR OUT       # tensorrt-stubs wheel in DIR -> OUT, for mypy

``check`` exits 1 when a committed file differs from what the wheels give. A C compiler (``cc``) is
needed for the stand-in library.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "data" / "tensorrt_api"

WHEELS = {
    "10.0.1": "tensorrt-cu12-bindings==10.0.1",
    "10.16.1": "tensorrt-cu13-bindings==10.16.1.11",
    "11.0.0": "tensorrt-cu13-bindings==11.0.0.114",
    "11.4.0": "tensorrt-cu13-bindings==11.4.0.106",
}
"""API version -> the wheel it is read from: the first and last TensorRT 10 and 11 on the registry."""

TRAMPOLINE_NAMES = (
    "get_batch",
    "get_batch_size",
    "get_algorithm",
    "read_calibration_cache",
    "write_calibration_cache",
    "get_quantile",
    "get_regression_cutoff",
    "read_histogram_cache",
    "write_histogram_cache",
    "log",
)
"""Python-overridable virtuals looked up by name in the binary (pybind11 trampolines find a Python
override by this string; the legacy calibrator's four extra methods are not attributes of the class)."""

STUB_SOURCE = """
void *createInferBuilder_INTERNAL(void *a, int b) { return 0; }
void *createInferRefitter_INTERNAL(void *a, void *b, int c) { return 0; }
void *createInferRuntime_INTERNAL(void *a, int b) { return 0; }
void *createNvOnnxParserRefitter_INTERNAL(void *a, void *b, int c) { return 0; }
void *createNvOnnxParser_INTERNAL(void *a, void *b, int c) { return 0; }
void *getBuilderPluginRegistry(int a) { return 0; }
int getNvOnnxParserVersion(void) { return 0; }
void *getPluginRegistry(void) { return 0; }
int initLibNvInferPlugins(void *a, const char *b) { return 0; }
"""

PREFIX = re.compile(r"\btensorrt_bindings\.tensorrt\.|\btensorrt\.tensorrt\.|\btensorrt_bindings\.")


def _signatures(doc: str | None, name: str) -> list[str]:
    """The pybind11 signatures at the head of a docstring: ``(params) -> ret`` per overload."""
    if not doc:
        return []
    found = []
    for line in doc.splitlines():
        line = line.strip()
        match = re.match(r"^(?:\d+\.\s*)?" + re.escape(name) + r"(\(.*\)\s*->\s*.*)$", line)
        if match:
            found.append(PREFIX.sub("", match.group(1)))
    return found


def _introspect() -> dict[str, object]:
    """Runs in the child process, with the stand-in libraries on LD_LIBRARY_PATH."""
    import inspect

    import tensorrt_bindings as trt

    def describe_class(cls: type) -> dict[str, object]:
        if hasattr(cls, "__members__") and isinstance(cls.__members__, dict):
            return {"kind": "enum", "values": sorted(cls.__members__)}
        members: dict[str, object] = {}
        for attr in sorted(dir(cls)):
            if attr.startswith("__") and attr not in ("__init__", "__call__", "__getitem__", "__len__"):
                continue
            if attr.startswith("_pybind11"):
                continue
            try:
                static = inspect.getattr_static(cls, attr)
            except AttributeError:
                continue
            if isinstance(static, property):
                sig = _signatures(getattr(static.fget, "__doc__", None), "")
                ret = sig[0].split("->", 1)[1].strip() if sig else ""
                members[attr] = {"kind": "property", "type": ret, "writable": static.fset is not None}
            elif isinstance(static, type):
                members[attr] = {
                    "kind": "class",
                    "type": PREFIX.sub("", f"{static.__module__}.{static.__qualname__}"),
                }
            elif isinstance(static, staticmethod):
                members[attr] = {
                    "kind": "staticmethod",
                    "signatures": _signatures(static.__func__.__doc__, attr),
                }
            elif callable(static) or type(static).__name__ in ("instancemethod", "wrapper_descriptor"):
                members[attr] = {
                    "kind": "method",
                    "signatures": _signatures(getattr(static, "__doc__", None), attr),
                }
            else:
                members[attr] = {"kind": "value", "type": type(static).__name__}
        return {
            "kind": "class",
            "bases": [b.__name__ for b in cls.__mro__[1:] if b.__module__.startswith("tensorrt")],
            "members": members,
        }

    classes: dict[str, object] = {}
    functions: dict[str, list[str]] = {}
    values: dict[str, str] = {}
    for name in sorted(dir(trt)):
        if name.startswith("_") and name != "__version__":
            continue
        obj = getattr(trt, name)
        if isinstance(obj, type):
            if obj.__module__.startswith("tensorrt"):
                classes[name] = describe_class(obj)
                for attr, nested in vars(obj).items():
                    if isinstance(nested, type) and not attr.startswith("_"):
                        classes[f"{name}.{attr}"] = describe_class(nested)
        elif callable(obj):
            functions[name] = _signatures(obj.__doc__, name) or ["(*args, **kwargs) -> object"]
        elif type(obj).__module__ != "builtins" or name == "__version__":
            values[name] = PREFIX.sub("", type(obj).__qualname__)
    return {"version": trt.__version__, "classes": classes, "functions": functions, "values": values}


def _trampolines(so_file: Path) -> list[str]:
    data = so_file.read_bytes()
    # A string may share its bytes with the end of a longer one ("...::read_histogram_cache\0").
    found = []
    for name in TRAMPOLINE_NAMES:
        if re.search(rb"(?<![A-Za-z0-9_])" + name.encode() + rb"\0", data):
            found.append(name)
    return found


def dump_wheel(wheel: Path, work: Path) -> dict[str, object]:
    """The API record of one bindings wheel (see the module docstring)."""
    target = work / wheel.stem
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    libs = work / "libs"
    if not libs.is_dir():
        libs.mkdir()
        source = work / "stub.c"
        source.write_text(STUB_SOURCE)
        for name in ("libnvinfer", "libnvinfer_plugin", "libnvonnxparser"):
            for major in ("10", "11"):
                subprocess.run(
                    ["cc", "-shared", "-fPIC", "-o", str(libs / f"{name}.so.{major}"), str(source)],
                    check=True,
                )
    env = {**os.environ, "LD_LIBRARY_PATH": str(libs), "PYTHONPATH": str(target)}
    here = str(Path(__file__).parent)
    code = (
        f"import json, sys; sys.path.insert(0, {here!r}); "
        "import tensorrt_api as t; print(json.dumps(t._introspect()))"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{wheel.name}: introspection failed: {done.stderr.strip().splitlines()[-1:]}")
    record = json.loads(done.stdout)
    record["wheel"] = wheel.name
    record["trampolines"] = _trampolines(target / "tensorrt_bindings" / "tensorrt.so")
    return record


def api_version(record: dict[str, object]) -> str:
    """``10.16.1.11`` -> ``10.16.1``."""
    return ".".join(str(record["version"]).split(".")[:3])


def dump_all(wheels: Path, out: Path) -> list[Path]:
    """Dump every bindings wheel in ``wheels`` into ``out/<version>.json``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        for wheel in sorted(wheels.glob("tensorrt_cu1*_bindings-*.whl")):
            record = dump_wheel(wheel, Path(tmp))
            path = out / f"{api_version(record)}.json"
            path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
            written.append(path)
    return written


STUBS = "tensorrt-stubs==10.13.0.35.1"
"""The type stubs of the TensorRT 10 API (mypy runs over the backend against them)."""


def _repair_signature(line: str) -> str:
    """Make one generated ``def`` line valid Python: a parameter named ``in`` becomes ``in_``, and a
    parameter without a default after one with a default gets ``= ...``."""
    line = re.sub(r"([(,]\s*)in:", r"\1in_:", line)
    head, sep, rest = line.partition("(")
    params, close, tail = rest.rpartition(")")
    if not sep or not close:
        return line
    parts, depth, current = [], 0, ""
    for char in params:
        depth += char in "[("
        depth -= char in "])"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    seen_default = False
    for i, part in enumerate(parts):
        if "=" in part:
            seen_default = True
        elif seen_default and ":" in part and not part.strip().startswith("*"):
            parts[i] = part + " = ..."
    return head + sep + ",".join(parts) + close + tail


def stubs(wheels: Path, out: Path) -> Path:
    """Extract the tensorrt-stubs wheel from ``wheels`` into ``out`` with its ``def`` lines repaired
    (the generated stubs name parameters ``in`` and put required parameters after defaults)."""
    found = sorted(wheels.glob("tensorrt_stubs-*.whl"))
    if not found:
        raise SystemExit(f"no tensorrt_stubs wheel in {wheels} (pip download --no-deps {STUBS})")
    with zipfile.ZipFile(found[-1]) as archive:
        for member in archive.namelist():
            if not member.endswith(".pyi"):
                continue
            text = archive.read(member).decode("utf-8")
            lines = []
            for line in text.splitlines():
                if re.match(r"bool: [\w.]*DataType", line):  # shadows the builtin in every annotation
                    continue
                if line.lstrip().startswith("def "):
                    line = _repair_signature(line).replace("-> ...:", "-> typing.Any:")
                    line = re.sub(r"\bcapsule\b", "typing.Any", line)
                lines.append(line)
            if member.endswith("tensorrt.pyi"):
                lines.insert(1, "import typing_extensions")
            target = out / member
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def download(dest: Path) -> None:
    """pip download the pinned wheels for this interpreter."""
    dest.mkdir(parents=True, exist_ok=True)
    for spec in [*WHEELS.values(), STUBS]:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "-d",
                str(dest),
                spec,
            ],
            check=True,
        )


def check(wheels: Path, out: Path) -> int:
    """Compare freshly dumped records with the committed ones; 0 when all match."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = dump_all(wheels, Path(tmp))
        if not fresh:
            print(f"no tensorrt bindings wheels in {wheels}")
            return 1
        status = 0
        for path in fresh:
            committed = out / path.name
            if not committed.is_file() or json.loads(committed.read_text()) != json.loads(path.read_text()):
                print(f"{committed}: differs from {json.loads(path.read_text())['wheel']}")
                status = 1
            else:
                print(f"{committed}: matches {json.loads(path.read_text())['wheel']}")
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("download", "dump", "check", "stubs"))
    parser.add_argument("wheels", type=Path)
    parser.add_argument("out", type=Path, nargs="?", default=DEFAULT_OUT)
    args = parser.parse_args()
    if args.command == "download":
        download(args.wheels)
        return 0
    if args.command == "stubs":
        print(stubs(args.wheels, args.out))
        return 0
    if args.command == "dump":
        for path in dump_all(args.wheels, args.out):
            print(path)
        return 0
    return check(args.wheels, args.out)


if __name__ == "__main__":
    sys.exit(main())
