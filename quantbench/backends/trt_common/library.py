"""Which TensorRT-family library a backend uses, its version, and its imported Python module.

NVIDIA ships more than one library with TensorRT's Python API: TensorRT itself (module ``tensorrt``)
and TensorRT for RTX (module ``tensorrt_rtx``). A :class:`TrtLibrary` names one of them; the builder,
runner and inspector of this package take the :class:`LoadedLibrary` a backend made from it and call
TensorRT's API through its module, never through an ``import`` of their own.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from types import ModuleType

from quantbench.errors import QuantbenchError


@dataclass(frozen=True)
class LibraryInfo:
    """The installed version of a TensorRT-family library.

    Attributes:
        version: the full version string, e.g. ``10.13.0.35``.
        major, minor, patch: its first three numbers.
        implicit: this version has implicit quantization (calibrators, ``BuilderFlag.INT8``/``FP16``,
            dynamic ranges); without it every network is built strongly typed.
    """

    version: str
    major: int
    minor: int
    patch: int
    implicit: bool

    @property
    def header(self) -> int:
        """The version as one number, as calibration cache headers write it (10.3.0 -> 100300)."""
        return self.major * 10000 + self.minor * 100 + self.patch

    @property
    def path(self) -> str:
        """``implicit+explicit`` where implicit quantization exists, else ``explicit``."""
        return "implicit+explicit" if self.implicit else "explicit"


@dataclass(frozen=True)
class TrtLibrary:
    """A TensorRT-family library: which module to import and which of its versions quantbench supports.

    Attributes:
        module: the Python module, e.g. ``tensorrt``; manifests and engine sidecars record the library's
            version under this name.
        name: the name messages use, e.g. ``TensorRT``.
        install_hint: how to install it, appended to the messages saying it is missing.
        supported_majors: the major versions the backend supports.
        implicit_majors: the major versions that keep implicit quantization (none: strongly typed only).
        known_limits: (op type, why) for ops the library runs in float whatever their Q/DQ; the INT8
            lint names the quantized nodes they explain.
    """

    module: str
    name: str
    install_hint: str
    supported_majors: tuple[int, ...]
    implicit_majors: tuple[int, ...] = ()
    known_limits: tuple[tuple[str, str], ...] = ()

    def parse_version(self, text: str) -> LibraryInfo:
        """``"10.13.0.35"`` -> LibraryInfo(10, 13, 0, ...).

        Raises:
            QuantbenchError: the text does not start with MAJOR.MINOR.
        """
        match = re.match(r"\s*(\d+)\.(\d+)(?:\.(\d+))?", text)
        if match is None:
            raise QuantbenchError(f"cannot read the {self.name} version {text!r}")
        major, minor, patch = int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
        return LibraryInfo(text.strip(), major, minor, patch, major in self.implicit_majors)

    def import_module(self) -> ModuleType:
        """Import the library's Python module.

        Raises:
            QuantbenchError: the library is not installed or its shared libraries cannot be loaded.
        """
        try:
            module = importlib.import_module(self.module)
        except ImportError as exc:
            raise QuantbenchError(f"{self.name} is not installed ({exc}); {self.install_hint}") from None
        except OSError as exc:  # the bindings are there, the libraries are not
            raise QuantbenchError(
                f"{self.name}'s libraries cannot be loaded ({exc}); {self.install_hint}"
            ) from None
        if not isinstance(getattr(module, "__version__", None), str):
            raise QuantbenchError(
                f"{self.name} is not installed (a {self.module} module without a version was found); "
                f"{self.install_hint}"
            )
        return module

    def load(self) -> LoadedLibrary:
        """Import the module and check its version.

        Raises:
            QuantbenchError: the library is missing, or its major version is not supported.
        """
        module = self.import_module()
        info = self.parse_version(str(getattr(module, "__version__", "")))
        if info.major not in self.supported_majors:
            majors = [str(major) for major in self.supported_majors]
            listed = " and ".join([", ".join(majors[:-1]), majors[-1]] if len(majors) > 1 else majors)
            raise QuantbenchError(
                f"{self.name} {info.version} is installed; quantbench's {self.name} backend supports "
                f"{self.name} {listed}"
            )
        return LoadedLibrary(self, module, info)


@dataclass(frozen=True)
class LoadedLibrary:
    """A TensorRT-family library, imported (see :meth:`TrtLibrary.load`).

    Attributes:
        library: which library.
        module: its Python module; TensorRT's API is called through it.
        info: its version.
    """

    library: TrtLibrary
    module: ModuleType
    info: LibraryInfo

    @property
    def name(self) -> str:
        """The library's name in messages, e.g. ``TensorRT``."""
        return self.library.name
