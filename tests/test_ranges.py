"""Tests for quantbench.ranges: the range formats and their registry, header checks, diffs and atomic writes.

Expected float32 bit patterns below were computed once with ``struct.pack('>f', amax / 127).hex()``
and are written out as literals.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import quantbench.ranges.formats as range_formats
from quantbench.errors import QuantbenchError
from quantbench.ranges import (
    DEFAULT_TRT_VERSION,
    DynamicRanges,
    PathLike,
    RangeFormat,
    diff_ranges,
    format_for,
    format_named,
    read_range_text,
    read_ranges,
    read_ranges_json,
    read_trt_cache,
    register,
    registered,
    trt_header_problems,
    trt_version_string,
    write_range_text,
    write_ranges,
    write_ranges_json,
    write_trt_cache,
)

READERS = [read_trt_cache, read_range_text, read_ranges_json, read_ranges]
HYPOTHESIS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def assert_error_at(exc: pytest.ExceptionInfo[QuantbenchError], path: Path, line: int) -> None:
    message = str(exc.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert "\n" not in message


# --- golden vectors ------------------------------------------------------------------------------------

GOLDEN = [  # amax, big-endian float32 bits of amax / 127
    (2.0, "3c810204"),
    (127.0, "3f800000"),
    (1.0, "3c010204"),
    (254.0, "40000000"),
    (12.7, "3dcccccd"),
    (0.5, "3b810204"),
    (1000.0, "40fbf7f0"),
    (0.0034, "37e093b0"),
]


@pytest.mark.parametrize(("amax", "bits"), GOLDEN)
def test_cache_writer_golden_bits(tmp_path: Path, amax: float, bits: str) -> None:
    path = tmp_path / "c.cache"
    write_trt_cache(DynamicRanges({"t": amax}), path, trt_version=100300, algorithm="EntropyCalibration2")
    assert path.read_text(encoding="utf-8") == f"TRT-100300-EntropyCalibration2\nt: {bits}\n"


@pytest.mark.parametrize(
    ("bits", "amax"),
    [  # amax = float32 scale * 127 in float64
        ("3c810204", 1.9999999925494194),
        ("3f800000", 127.0),
        ("40000000", 254.0),
        ("3dcccccd", 12.700000189244747),
        ("3C810204", 1.9999999925494194),  # upper case
        ("800000", 1.4928778255443051e-36),  # 0x00800000 with leading zeros dropped
        ("1", 1.7796490496925177e-43),  # smallest subnormal
        ("0", 0.0),
        ("00000000", 0.0),
    ],
)
def test_cache_reader_golden_bits(tmp_path: Path, bits: str, amax: float) -> None:
    path = write(tmp_path / "c.cache", f"TRT-8600-MinMaxCalibration\nname: {bits}\n")
    ranges = read_trt_cache(path)
    assert ranges.amax == {"name": amax}


@pytest.mark.parametrize(
    ("header", "version", "algorithm"),
    [
        ("TRT-8600-MinMaxCalibration", 8600, "MinMaxCalibration"),
        ("TRT-100300-EntropyCalibration2", 100300, "EntropyCalibration2"),
        ("TRT-8601-SomethingNew", 8601, "SomethingNew"),  # unknown algorithm kept
    ],
)
def test_cache_header_parsed(tmp_path: Path, header: str, version: int, algorithm: str) -> None:
    path = write(tmp_path / "c.cache", f"{header}\na: 3c810204\n")
    ranges = read_trt_cache(path)
    assert (ranges.trt_version, ranges.trt_algorithm) == (version, algorithm)
    assert ranges.source == str(path)
    assert ranges.method == "" and ranges.quantbench_version == ""


def test_cache_names_with_colons_and_crlf_bom(tmp_path: Path) -> None:
    path = tmp_path / "c.cache"
    path.write_bytes(
        b"\xef\xbb\xbfTRT-8600-EntropyCalibration2\r\ninput:0: 3f800000\r\n\r\na:b:c:40000000\r\n"
    )
    assert read_trt_cache(path).amax == {"input:0": 127.0, "a:b:c": 254.0}


def test_text_reader_spaces_comments_and_colons(tmp_path: Path) -> None:
    text = "# ranges\n\n  conv1 : 2.5\n   # indented comment\ninput:0:1e-3\nx y :+.5\n"
    ranges = read_range_text(write(tmp_path / "r.txt", text))
    assert ranges.amax == {"conv1": 2.5, "input:0": 0.001, "x y": 0.5}
    assert list(ranges.amax) == ["conv1", "input:0", "x y"]


def test_text_reader_old_mac_line_breaks(tmp_path: Path) -> None:
    path = tmp_path / "r.txt"
    path.write_bytes(b"a:1\rb:2\r")
    assert read_range_text(path).amax == {"a": 1.0, "b": 2.0}


def test_text_writer_exact_lines(tmp_path: Path) -> None:
    path = tmp_path / "r.txt"
    write_range_text(DynamicRanges({"input:0": 2.0, "b": 0.1, "c": 1e-300}), path)
    assert path.read_text(encoding="utf-8") == "input:0:2.0\nb:0.1\nc:1e-300\n"


# --- writing the cache header ----------------------------------------------------------------------------


def test_default_trt_version_is_10_13() -> None:
    assert DEFAULT_TRT_VERSION == 101300
    assert trt_version_string(DEFAULT_TRT_VERSION) == "10.13.0"


@pytest.mark.parametrize(
    ("method", "algorithm"),
    [
        ("minmax", "MinMaxCalibration"),
        ("trt-minmax", "MinMaxCalibration"),
        ("trt-entropy", "EntropyCalibration"),
        ("trt-legacy", "LegacyCalibration"),
        ("entropy", "EntropyCalibration2"),
        ("percentile-99.99", "EntropyCalibration2"),
        ("", "EntropyCalibration2"),
    ],
)
def test_cache_header_from_method(tmp_path: Path, method: str, algorithm: str) -> None:
    path = tmp_path / "c.cache"
    write_trt_cache(DynamicRanges({"a": 1.0}, method=method), path)
    assert path.read_text(encoding="utf-8").split("\n")[0] == f"TRT-101300-{algorithm}"


def test_cache_header_arguments_beat_fields(tmp_path: Path) -> None:
    path = tmp_path / "c.cache"
    ranges = DynamicRanges({"a": 1.0}, method="minmax", trt_version=8600, trt_algorithm="LegacyCalibration")
    write_trt_cache(ranges, path)
    assert path.read_text(encoding="utf-8").startswith("TRT-8600-LegacyCalibration\n")
    write_trt_cache(ranges, path, trt_version=100300, algorithm="EntropyCalibration")
    assert path.read_text(encoding="utf-8").startswith("TRT-100300-EntropyCalibration\n")


@pytest.mark.parametrize(
    ("version", "algorithm"), [(-1, "EntropyCalibration2"), (8600, "Bad Name"), (8600, "a:b")]
)
def test_cache_writer_rejects_bad_header(tmp_path: Path, version: int, algorithm: str) -> None:
    path = tmp_path / "c.cache"
    with pytest.raises(QuantbenchError, match="bad cache header"):
        write_trt_cache(DynamicRanges({"a": 1.0}), path, trt_version=version, algorithm=algorithm)
    assert not path.exists()


# --- round trips -----------------------------------------------------------------------------------------


def full_ranges() -> DynamicRanges:
    return DynamicRanges(
        {"input:0": 2.5, "conv 1/out": 0.1, "z": 1e-300, "a": 7.0},
        method="percentile-99.99",
        model_hash="ab" * 32,
        preprocessing={"resize": 256, "mean": [0.485, 0.456, 0.406], "layout": "NCHW"},
        image_count=100,
        quantbench_version="0.1.0",
        trt_version=100300,
        trt_algorithm="EntropyCalibration2",
    )


def test_json_round_trip_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    original = full_ranges()
    write_ranges_json(original, path)
    back = read_ranges_json(path)
    assert back.source == str(path)
    back.source = ""
    assert back == original
    assert list(back.amax) == ["input:0", "conv 1/out", "z", "a"]
    document = json.loads(path.read_text(encoding="utf-8"))
    assert document["format"] == "quantbench-ranges" and document["format_version"] == 1
    assert list(document["ranges"]) == ["input:0", "conv 1/out", "z", "a"]


def test_text_round_trip_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "r.txt"
    write_range_text(full_ranges(), path)
    assert read_range_text(path).amax == full_ranges().amax


def test_cache_round_trip_within_float32(tmp_path: Path) -> None:
    path = tmp_path / "r.cache"
    write_trt_cache(full_ranges(), path)
    back = read_trt_cache(path)
    assert list(back.amax) == list(full_ranges().amax)
    for name, amax in full_ranges().amax.items():
        if amax > 1e-30:  # 1e-300 / 127 underflows float32 to 0
            assert back.amax[name] == pytest.approx(amax, rel=1e-6)
    assert back.amax["z"] == 0.0
    assert (back.trt_version, back.trt_algorithm) == (100300, "EntropyCalibration2")


# Names that survive the line formats: no line breaks, no surrounding whitespace, no leading '#'/BOM.
line_names = (
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\n\r"), min_size=1, max_size=30)
    .map(str.strip)
    .filter(lambda s: s != "" and s[0] not in "#\ufeff{")
)
positive = st.floats(min_value=0.0, exclude_min=True, allow_infinity=False, allow_nan=False)
float32_safe = st.floats(min_value=1e-30, max_value=1e30)


@HYPOTHESIS
@given(table=st.dictionaries(line_names, positive, min_size=1, max_size=8))
def test_text_round_trip_property(tmp_path: Path, table: dict[str, float]) -> None:
    path = tmp_path / "r.txt"
    write_range_text(DynamicRanges(table), path)
    assert list(read_range_text(path).amax.items()) == list(table.items())
    assert list(read_ranges(path).amax.items()) == list(table.items())


@HYPOTHESIS
@given(
    table=st.dictionaries(st.text(max_size=30), positive, min_size=1, max_size=8), count=st.integers(0, 10**9)
)
def test_json_round_trip_property(tmp_path: Path, table: dict[str, float], count: int) -> None:
    path = tmp_path / "r.json"
    write_ranges_json(DynamicRanges(table, image_count=count, preprocessing={"k": list(table)}), path)
    back = read_ranges(path)
    assert list(back.amax.items()) == list(table.items())
    assert back.image_count == count and back.preprocessing == {"k": list(table)}


@HYPOTHESIS
@given(table=st.dictionaries(line_names, float32_safe, min_size=1, max_size=8))
def test_cache_round_trip_property(tmp_path: Path, table: dict[str, float]) -> None:
    path = tmp_path / "r.cache"
    write_trt_cache(DynamicRanges(table), path)
    back = read_ranges(path)
    assert list(back.amax) == list(table)
    for name, amax in table.items():
        assert back.amax[name] == pytest.approx(amax, rel=1e-6)


# --- writers refuse what their readers would reject ------------------------------------------------------


@pytest.mark.parametrize("name", ["", " a", "a ", "a\nb", "a\rb", "\ufeffa", "\ta"])
@pytest.mark.parametrize("writer", [write_trt_cache, write_range_text])
def test_line_writers_refuse_unstorable_names(tmp_path: Path, writer: object, name: str) -> None:
    path = tmp_path / "out"
    with pytest.raises(QuantbenchError, match="cannot be stored") as exc:
        writer(DynamicRanges({"ok": 1.0, name: 1.0}), path)  # type: ignore[operator]
    assert str(path) in str(exc.value)
    assert not path.exists()


def test_hash_names_only_refused_by_text(tmp_path: Path) -> None:
    with pytest.raises(QuantbenchError, match="cannot be stored"):
        write_range_text(DynamicRanges({"#a": 1.0}), tmp_path / "r.txt")
    write_trt_cache(DynamicRanges({"#a": 1.0}), tmp_path / "r.cache")
    assert read_trt_cache(tmp_path / "r.cache").amax == {"#a": 0.9999999962747097}  # bits 3c010204


@pytest.mark.parametrize("amax", [math.nan, math.inf, -1.0, 0.0])
@pytest.mark.parametrize("writer", [write_range_text, write_ranges_json])
def test_text_and_json_writers_refuse_bad_amax(tmp_path: Path, writer: object, amax: float) -> None:
    path = tmp_path / "out"
    with pytest.raises(QuantbenchError, match="'bad' has amax"):
        writer(DynamicRanges({"ok": 1.0, "bad": amax}), path)  # type: ignore[operator]
    assert not path.exists()


@pytest.mark.parametrize("amax", [math.nan, math.inf, -1.0, 1e39 * 127])
def test_cache_writer_refuses_bad_amax(tmp_path: Path, amax: float) -> None:
    path = tmp_path / "c.cache"
    with pytest.raises(QuantbenchError, match="'bad'"):
        write_trt_cache(DynamicRanges({"ok": 1.0, "bad": amax}), path)
    assert not path.exists()


def test_cache_writer_allows_zero(tmp_path: Path) -> None:
    path = tmp_path / "c.cache"
    write_trt_cache(DynamicRanges({"z": 0.0}), path, trt_version=8600, algorithm="MinMaxCalibration")
    assert path.read_text(encoding="utf-8") == "TRT-8600-MinMaxCalibration\nz: 00000000\n"


@pytest.mark.parametrize("writer", [write_trt_cache, write_range_text, write_ranges_json])
def test_writers_refuse_empty_ranges(tmp_path: Path, writer: object) -> None:
    with pytest.raises(QuantbenchError, match="no tensors"):
        writer(DynamicRanges({}), tmp_path / "out")  # type: ignore[operator]


# --- malformed input -------------------------------------------------------------------------------------

H = "TRT-8600-EntropyCalibration2\n"


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("", 1, "empty file"),
        ("\n  \n", 1, "empty file"),
        ("a: 3c810204\n", 1, "expected a header"),
        ("TRT-abc-EntropyCalibration2\n", 1, "expected a header"),
        ("TRT-8600-\na: 1\n", 1, "expected a header"),
        ("TRT-8600-MinMaxCalibration\n", 1, "no tensors"),
        (H + "a: 3c810204\nb 3c810204\n", 3, "no ':'"),
        (H + "a: zz\n", 2, "hex"),
        (H + "a:\n", 2, "hex"),
        (H + "a: 03c810204\n", 2, "hex"),
        (H + "a: 0x3c810204\n", 2, "hex"),
        (H + "a: 3c81 0204\n", 2, "hex"),
        (H + "a: 7fc00000\n", 2, "finite"),  # NaN
        (H + "a: 7f800000\n", 2, "finite"),  # +inf
        (H + "a: bc810204\n", 2, ">= 0"),  # negative
        (H + "a: 80000000\n", 2, ">= 0"),  # negative zero
        (H + ": 3c810204\n", 2, "empty tensor name"),
        (H + "a: 3c810204\n\nb: 1\na: 3c810204\n", 5, "appears twice (first on line 2)"),
    ],
)
def test_malformed_cache(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = write(tmp_path / "bad.cache", text)
    with pytest.raises(QuantbenchError, match=fragment.replace("(", r"\(").replace(")", r"\)")) as exc:
        read_trt_cache(path)
    assert_error_at(exc, path, line)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("", 1, "no 'tensor_name:amax'"),
        ("# only a comment\n\n", 1, "no 'tensor_name:amax'"),
        ("a:1\nb 2\n", 2, "no ':'"),
        ("a:abc\n", 1, "not a decimal"),
        ("a:\n", 1, "not a decimal"),
        ("a:nan\n", 1, "not a decimal"),
        ("a:inf\n", 1, "not a decimal"),
        ("a:1_000\n", 1, "not a decimal"),
        ("a:0x10\n", 1, "not a decimal"),
        ("a:-1\n", 1, "finite and > 0"),
        ("a:0\n", 1, "finite and > 0"),
        ("a:0.0e5\n", 1, "finite and > 0"),
        ("a:1e999\n", 1, "finite and > 0"),
        (":2\n", 1, "empty tensor name"),
        ("a:1\n#c\nb:2\n a :3\n", 4, "appears twice (first on line 1)"),
    ],
)
def test_malformed_text(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = write(tmp_path / "bad.txt", text)
    with pytest.raises(QuantbenchError, match=fragment.replace("(", r"\(").replace(")", r"\)")) as exc:
        read_range_text(path)
    assert_error_at(exc, path, line)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[1, 2]", "expected a JSON object"),
        ('{"method": "x"}', "'ranges' must be"),
        ('{"ranges": []}', "'ranges' must be"),
        ('{"ranges": {}}', "'ranges' must be"),
        ('{"ranges": {"t1": "2.0"}}', "'t1' has amax"),
        ('{"ranges": {"t1": true}}', "'t1' has amax"),
        ('{"ranges": {"t1": null}}', "'t1' has amax"),
        ('{"ranges": {"t1": NaN}}', "'t1' has amax"),
        ('{"ranges": {"t1": Infinity}}', "'t1' has amax"),
        ('{"ranges": {"t1": 1e999}}', "'t1' has amax"),
        ('{"ranges": {"t1": ' + "9" * 400 + "}}", "'t1' has amax"),
        ('{"ranges": {"t1": -1}}', "'t1' has amax"),
        ('{"ranges": {"t1": 0}}', "'t1' has amax"),
        ('{"ranges": {"t1": 1, "t1": 2}}', "'t1' appears twice"),
        ('{"format": "other", "ranges": {"t1": 1}}', "'format' is 'other'"),
        ('{"format_version": 2, "ranges": {"t1": 1}}', "format_version 2"),
        ('{"image_count": -1, "ranges": {"t1": 1}}', "'image_count' must be >= 0"),
        ('{"image_count": "3", "ranges": {"t1": 1}}', "'image_count' must be of type int"),
        ('{"image_count": 1.5, "ranges": {"t1": 1}}', "'image_count' must be of type int"),
        ('{"preprocessing": [], "ranges": {"t1": 1}}', "'preprocessing' must be of type dict"),
        ('{"method": null, "ranges": {"t1": 1}}', "'method' must be of type str"),
        ('{"trt_version": "8600", "ranges": {"t1": 1}}', "'trt_version' must be of type int or null"),
        ("[" * 100000, "invalid JSON"),
    ],
)
def test_malformed_json(tmp_path: Path, text: str, fragment: str) -> None:
    path = write(tmp_path / "bad.json", text)
    with pytest.raises(QuantbenchError, match=fragment) as exc:
        read_ranges_json(path)
    assert str(exc.value).startswith(f"{path}:")
    assert "\n" not in str(exc.value)


def test_invalid_json_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.json", '{\n  "ranges": {\n    "a": 1,\n  }\n}\n')
    with pytest.raises(QuantbenchError, match="invalid JSON") as exc:
        read_ranges_json(path)
    assert_error_at(exc, path, 4)


def test_json_nulls_allowed_where_documented(tmp_path: Path) -> None:
    path = write(tmp_path / "r.json", '{"trt_version": null, "trt_algorithm": null, "ranges": {"a": 3}}')
    ranges = read_ranges_json(path)
    assert ranges.amax == {"a": 3.0} and isinstance(ranges.amax["a"], float)
    assert ranges.trt_version is None and ranges.quantbench_version == ""


@pytest.mark.parametrize("reader", READERS)
def test_missing_file(tmp_path: Path, reader: object) -> None:
    path = tmp_path / "nope.cache"
    with pytest.raises(QuantbenchError, match="cannot read") as exc:
        reader(path)  # type: ignore[operator]
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("reader", READERS)
def test_not_utf8(tmp_path: Path, reader: object) -> None:
    path = tmp_path / "bin.cache"
    path.write_bytes(b"TRT-8600-MinMaxCalibration\na: \xff\xfe\n")
    with pytest.raises(QuantbenchError, match="not UTF-8") as exc:
        reader(path)  # type: ignore[operator]
    assert_error_at(exc, path, 2)


def check_reader_outcome(path: Path, *, allow_zero: bool) -> None:
    """Each reader either raises QuantbenchError naming the file or returns sane ranges."""
    for reader in READERS:
        try:
            ranges = reader(path)
        except QuantbenchError as exc:
            assert str(exc).startswith(str(path)), str(exc)
            continue
        assert len(ranges) > 0
        for amax in ranges.amax.values():
            assert isinstance(amax, float) and math.isfinite(amax)
            assert amax > 0 or (allow_zero and amax == 0 and reader in (read_trt_cache, read_ranges))


fragments = st.sampled_from(
    ["TRT-8600-EntropyCalibration2", "TRT-", "a", ":", " ", "3c810204", "0", "7fc00000", "ff", "#", "{", "}",
     '"ranges"', "1e5", "-", ".", "\n", "\r", "\t", "nan", "\ufeff", "input:0", "[", "1"]
)  # fmt: skip
structured = st.lists(fragments, max_size=40).map("".join)


@HYPOTHESIS
@given(text=st.text() | structured)
def test_random_text_never_crashes(tmp_path: Path, text: str) -> None:
    path = tmp_path / "random"
    path.write_text(text, encoding="utf-8", newline="")
    check_reader_outcome(path, allow_zero=True)


@HYPOTHESIS
@given(data=st.binary(max_size=200))
def test_random_bytes_never_crash(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "random"
    path.write_bytes(data)
    check_reader_outcome(path, allow_zero=True)


# --- header problems, versions, diffs, helpers -----------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "text"),
    [(100300, "10.3.0"), (8600, "8.6.0"), (8601, "8.6.1"), (101300, "10.13.0"), (7103, "7.1.3")],
)
def test_trt_version_string(version: int, text: str) -> None:
    assert trt_version_string(version) == text


def cache_ranges(version: int | None, algorithm: str | None, source: str = "") -> DynamicRanges:
    return DynamicRanges({"a": 1.0}, trt_version=version, trt_algorithm=algorithm, source=source)


def test_header_problems_none_when_matching() -> None:
    ranges = cache_ranges(100300, "EntropyCalibration2")
    assert trt_header_problems(ranges, expect_version=100300, expect_algorithm="EntropyCalibration2") == []
    assert trt_header_problems(ranges, expect_version=None, expect_algorithm=None) == []
    assert trt_header_problems(cache_ranges(None, None), expect_version=8600, expect_algorithm="X") == []


def test_header_problems_version() -> None:
    problems = trt_header_problems(
        cache_ranges(8600, "EntropyCalibration2"),
        expect_version=100300,
        expect_algorithm="EntropyCalibration2",
    )
    assert problems == [
        "cache header is for TensorRT 8.6.0 but TensorRT 10.3.0 is installed; "
        "TensorRT silently ignores a cache from another version"
    ]


def test_header_problems_algorithm_and_source() -> None:
    ranges = cache_ranges(100300, "MinMaxCalibration", source="calib.cache")
    problems = trt_header_problems(ranges, expect_version=8601, expect_algorithm="EntropyCalibration2")
    assert len(problems) == 2
    assert all(p.startswith("calib.cache: ") for p in problems)
    assert "10.3.0" in problems[0] and "8.6.1" in problems[0]
    assert "MinMaxCalibration" in problems[1] and "EntropyCalibration2" in problems[1]
    assert "silently ignores" in problems[1]


def test_header_problems_unknown_algorithm() -> None:
    ranges = cache_ranges(100300, "Entropy3")
    for expected in ("EntropyCalibration2", None):
        problems = trt_header_problems(ranges, expect_version=100300, expect_algorithm=expected)
        assert len(problems) == 1 and "unknown calibration algorithm 'Entropy3'" in problems[0]


def test_diff_ranges() -> None:
    a = DynamicRanges({"x": 2.0, "y": 4.0, "only_a": 1.0, "z": 0.0})
    b = DynamicRanges({"new": 3.0, "y": 1.0, "x": 3.0, "z": 0.0})
    diff = diff_ranges(a, b)
    assert diff.rows == [("x", 2.0, 3.0, 1.5), ("y", 4.0, 1.0, 0.25), ("z", 0.0, 0.0, 1.0)]
    assert diff.only_a == ["only_a"]
    assert diff.only_b == ["new"]
    assert diff_ranges(DynamicRanges({"z": 0.0}), DynamicRanges({"z": 1.0})).rows == [
        ("z", 0.0, 1.0, math.inf)
    ]


def test_dynamic_ranges_helpers() -> None:
    ranges = DynamicRanges({"b": 127.0, "a": 2.0}, source="r.txt")
    assert len(ranges) == 2
    assert ranges.names() == ["b", "a"]
    assert ranges.scale("b") == 1.0
    assert ranges.scale("a") == 0.015748031496062992  # 2 / 127 in float64
    with pytest.raises(QuantbenchError, match=r"'missing' has no dynamic range in r\.txt"):
        ranges.scale("missing")


# --- dispatch by content and extension -------------------------------------------------------------------


def test_read_ranges_sniffs_content(tmp_path: Path) -> None:
    cache = write(tmp_path / "a.txt", "TRT-8600-MinMaxCalibration\nt: 3f800000\n")
    text = write(tmp_path / "b.cache", "TRT-x:2\n")  # a text entry whose name starts with TRT-
    blob = write(tmp_path / "c.txt", '\n  {"ranges": {"t": 5}}')
    assert read_ranges(cache).amax == {"t": 127.0} and read_ranges(cache).trt_version == 8600
    assert read_ranges(text).amax == {"TRT-x": 2.0}
    assert read_ranges(blob).amax == {"t": 5.0}


@pytest.mark.parametrize(
    ("name", "fmt", "first_line"),
    [("r.cache", None, "TRT-101300-EntropyCalibration2"), ("r.TXT", None, "t:2.0"), ("r.json", None, "{"),
     ("r.bin", "cache", "TRT-101300-EntropyCalibration2"), ("r.cache", "txt", "t:2.0")],
)  # fmt: skip
def test_write_ranges_by_extension(tmp_path: Path, name: str, fmt: str | None, first_line: str) -> None:
    path = tmp_path / name
    write_ranges(DynamicRanges({"t": 2.0}), path, fmt)  # type: ignore[arg-type]
    assert path.read_text(encoding="utf-8").split("\n")[0] == first_line
    assert read_ranges(path).amax["t"] == pytest.approx(2.0, rel=1e-6)


def test_write_ranges_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(QuantbenchError, match="unknown ranges format 'yaml'"):
        write_ranges(DynamicRanges({"t": 2.0}), tmp_path / "r.yaml")
    assert list(tmp_path.iterdir()) == []


def test_write_ranges_unknown_format_message_lists_the_suffixes(tmp_path: Path) -> None:
    path = tmp_path / "r"
    with pytest.raises(QuantbenchError) as exc:
        write_ranges(DynamicRanges({"t": 2.0}), path)
    assert str(exc.value) == f"cannot write {path}: unknown ranges format '' (use .cache, .txt or .json)"
    with pytest.raises(
        QuantbenchError, match=r"unknown ranges format 'CACHE' \(use \.cache, \.txt or \.json\)"
    ):
        write_ranges(DynamicRanges({"t": 2.0}), tmp_path / "r.cache", "CACHE")
    assert list(tmp_path.iterdir()) == []


# --- the format registry ---------------------------------------------------------------------------------


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Formats registered during the test are forgotten after it."""
    monkeypatch.setattr(range_formats, "_REGISTRY", list(range_formats.registered()))


def read_csv_ranges(path: PathLike) -> DynamicRanges:
    lines = Path(path).read_text(encoding="utf-8").splitlines()[1:]
    return DynamicRanges({name: float(amax) for name, amax in (line.split(",") for line in lines)})


def write_csv_ranges(ranges: DynamicRanges, path: PathLike) -> None:
    rows = "".join(f"{name},{amax!r}\n" for name, amax in ranges.amax.items())
    Path(path).write_text("tensor,amax\n" + rows, encoding="utf-8")


CSV_FORMAT = RangeFormat(
    "csv",
    (".csv",),
    read_csv_ranges,
    write_csv_ranges,
    "comma-separated tensor,amax",
    recognises=lambda text: text.startswith("tensor,amax"),
)


def test_built_in_formats() -> None:
    formats = registered()
    assert [(f.name, f.suffixes) for f in formats] == [
        ("cache", (".cache",)),
        ("txt", (".txt",)),
        ("json", (".json",)),
    ]
    assert [(f.read, f.write) for f in formats] == [
        (read_trt_cache, write_trt_cache),
        (read_range_text, write_range_text),
        (read_ranges_json, write_ranges_json),
    ]
    assert all(f.description for f in formats)
    assert [f.name for f in formats if f.recognises is None] == ["txt"]  # the format of unrecognised text


@pytest.mark.parametrize(
    ("path", "expected"),
    [("r.cache", "cache"), ("r.TXT", "txt"), ("v1.2/r.Json", "json"), ("r.json.bak", None), ("r", None),
     (".json", None), ("r.yaml", None)],
)  # fmt: skip
def test_format_for_goes_by_the_last_extension(path: str, expected: str | None) -> None:
    fmt = format_for(path)
    assert (fmt.name if fmt else None) == expected


def test_format_named_is_exact() -> None:
    assert format_named("json") is registered()[2]
    assert format_named("JSON") is None and format_named(".json") is None and format_named("") is None


def test_a_registered_format_is_written_and_read(tmp_path: Path, scratch_registry: None) -> None:
    assert register(CSV_FORMAT) is CSV_FORMAT
    assert registered()[-1] is CSV_FORMAT and format_for("r.CSV") is CSV_FORMAT
    by_suffix, by_name = tmp_path / "r.CSV", tmp_path / "r.out"
    write_ranges(DynamicRanges({"a": 1.5, "b": 2.0}), by_suffix)
    write_ranges(DynamicRanges({"a": 1.5, "b": 2.0}), by_name, "csv")
    assert (
        by_suffix.read_text(encoding="utf-8")
        == by_name.read_text(encoding="utf-8")
        == "tensor,amax\na,1.5\nb,2.0\n"
    )
    assert read_ranges(by_name).amax == {"a": 1.5, "b": 2.0}
    assert read_ranges(write(tmp_path / "t.txt", "a:3\n")).amax == {"a": 3.0}  # text is still the fallback
    with pytest.raises(QuantbenchError, match=r"\(use \.cache, \.txt, \.json or \.csv\)"):
        write_ranges(DynamicRanges({"t": 2.0}), tmp_path / "r.yaml")


def noop_read(path: PathLike) -> DynamicRanges:
    raise AssertionError("not called")


def noop_write(ranges: DynamicRanges, path: PathLike) -> None:
    raise AssertionError("not called")


@pytest.mark.parametrize(
    ("name", "suffixes", "recognises", "fragment"),
    [("txt", (".csv",), str.isspace, "'txt' is already registered"),
     ("csv", (".csv", ".TXT"), str.isspace, "must be lower case with a dot"),
     ("csv", ("csv",), str.isspace, "must be lower case with a dot"),
     ("csv", (".csv", ".json"), str.isspace, r"\['\.json'\] already belong to 'json'"),
     ("csv", (".csv",), None, "'txt' already reads unrecognised files")],
)  # fmt: skip
def test_register_refuses_clashes(
    scratch_registry: None, name: str, suffixes: tuple[str, ...], recognises: object, fragment: str
) -> None:
    fmt = RangeFormat(name, suffixes, noop_read, noop_write, "clash", recognises)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=fragment):
        register(fmt)
    assert [f.name for f in registered()] == ["cache", "txt", "json"]


def test_read_ranges_without_a_fallback_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(range_formats, "_REGISTRY", [f for f in registered() if f.recognises is not None])
    path = write(tmp_path / "r.txt", "a:1\n")
    with pytest.raises(QuantbenchError, match=r"r\.txt: not a range table in a known format"):
        read_ranges(path)
    assert read_ranges(write(tmp_path / "r.json", '{"ranges": {"a": 1}}')).amax == {"a": 1.0}


# --- atomic writes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", [write_trt_cache, write_range_text, write_ranges_json])
def test_failed_write_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: object) -> None:
    path = write(tmp_path / "ranges.out", "old content\n")

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        writer(DynamicRanges({"t": 2.0}), path)  # type: ignore[operator]
    monkeypatch.undo()
    assert path.read_text(encoding="utf-8") == "old content\n"
    assert os.listdir(tmp_path) == ["ranges.out"]


@pytest.mark.parametrize("preprocessing", [{"f": object()}, {"mean": math.nan}])
def test_unserialisable_json_keeps_old_file(tmp_path: Path, preprocessing: dict[str, object]) -> None:
    path = write(tmp_path / "r.json", "old content\n")
    with pytest.raises(QuantbenchError, match="not plain JSON") as exc:
        write_ranges_json(DynamicRanges({"t": 2.0}, preprocessing=preprocessing), path)
    assert str(path) in str(exc.value)
    assert path.read_text(encoding="utf-8") == "old content\n"
    assert os.listdir(tmp_path) == ["r.json"]
