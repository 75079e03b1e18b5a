"""Decoding one image file into an 8-bit BGR array, or saying why it cannot be used."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from quantbench.data.files import SkipSample

MIN_SIDE = 8
"""Images with a side shorter than this many pixels are skipped."""

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8\xff"
_JPEG_SOS = b"\xff\xda"
_JPEG_EOI = b"\xff\xd9"
# Start-of-frame markers (baseline, progressive, lossless, arithmetic); not DHT (C4), JPG (C8), DAC (CC).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _png_has_alpha(data: bytes) -> bool:
    """True for a PNG whose IHDR colour type is 4 (grey + alpha) or 6 (RGBA)."""
    if not data.startswith(_PNG_SIGNATURE) or len(data) < 26 or data[12:16] != b"IHDR":
        return False
    return data[25] in (4, 6)


def _png_problem(data: bytes) -> str | None:
    """Why a PNG cannot be decoded whole, found by walking its chunks (each length, type and the CRC of
    the critical ones) up to IEND; None where they are intact. Caught here, a broken PNG never reaches
    the decoder, whose library writes its complaints to the process's stderr."""
    import zlib

    pos = len(_PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            return "truncated PNG"
        crc = int.from_bytes(data[end - 4 : end], "big")
        critical = kind[:1].isupper()  # an ancillary chunk's bad checksum is only warned about
        if critical and zlib.crc32(data[pos + 4 : end - 4]) != crc:
            return f"damaged PNG (bad checksum in its {kind.decode('latin-1', 'replace')!r} chunk)"
        if kind == b"IEND":
            return None
        pos = end
    return "truncated PNG"


def _jpeg_components(data: bytes) -> int | None:
    """The component count in a JPEG's start-of-frame header, or None if it cannot be found.

    Walks the marker segments from the start of the file up to the first
    start-of-scan, so bytes inside other segments are never mistaken for markers.
    """
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:
            return None
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _JPEG_SOF:
            return data[pos + 9] if pos + 9 < len(data) else None
        pos += 2 + length
    return None


def _jpeg_is_truncated(data: bytes) -> bool:
    """True for a JPEG with no start-of-scan, or whose last scan has no end-of-image after it."""
    last_scan = data.rfind(_JPEG_SOS)
    return last_scan < 0 or data.find(_JPEG_EOI, last_scan + 2) < 0


def _to_uint8(image: np.ndarray, conversions: list[str]) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        conversions.append("16-bit")
        return np.rint(image / 257.0).astype(np.uint8)
    raise SkipSample(f"unsupported pixel type {image.dtype}; save it as an 8-bit image")


def decode_image(path: Path) -> tuple[np.ndarray, list[str]]:
    """Read and decode one image file.

    EXIF orientation is applied. 16-bit images become 8-bit (value / 257,
    rounded), grayscale becomes 3-channel and alpha is dropped; each such change
    is listed in the returned conversions.

    Args:
        path: the image file.

    Returns:
        The image as a uint8 BGR array of shape (H, W, 3), and the conversions
        made: any of ``"16-bit"``, ``"grayscale"``, ``"alpha dropped"``, ``"CMYK"``.

    Raises:
        SkipSample: the file is empty, unreadable, a truncated JPEG, a truncated
            or damaged PNG, not a decodable image, in an unsupported pixel type, or
            too small.
    """
    import cv2

    try:
        buffer = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise SkipSample(f"unreadable ({exc.strerror or type(exc).__name__})") from None
    if buffer.size == 0:
        raise SkipSample("empty file")
    data = buffer.tobytes()
    conversions: list[str] = []
    if data.startswith(_JPEG_SOI):
        if _jpeg_is_truncated(data):
            raise SkipSample("truncated JPEG")
        if _jpeg_components(data) == 4:
            conversions.append("CMYK")
    elif data.startswith(_PNG_SIGNATURE):
        problem = _png_problem(data)
        if problem is not None:
            raise SkipSample(problem)
        if _png_has_alpha(data):
            conversions.append("alpha dropped")

    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH)
    except cv2.error:
        image = None
    if image is None or image.size == 0:
        raise SkipSample("not a decodable image")

    image = _to_uint8(image, conversions)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        conversions.append("grayscale")
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        if "alpha dropped" not in conversions:
            conversions.append("alpha dropped")
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)

    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise SkipSample(f"too small ({width}x{height}); images need at least {MIN_SIDE} pixels a side")
    return np.ascontiguousarray(image), conversions
