"""What backends of TensorRT-family libraries share (NVIDIA TensorRT, TensorRT for RTX ...).

These libraries have the same Python API under different module names. The code here never imports
one: a backend names its library with a :class:`~library.TrtLibrary` record, loads it once
(:meth:`~library.TrtLibrary.load`) and hands the :class:`~library.LoadedLibrary` to what it makes.

=====================  ================================================================
module                 what
=====================  ================================================================
library                :class:`~library.TrtLibrary` (module, name, supported and implicit majors),
                       its version, the imported module
builder                networks, flags, profiles, dynamic ranges, timing cache, plugins, logger
engine_file            engine files and their sidecars (library version, GPU)
runner                 running an engine; CUDA-event timing; CUDA graphs
inspector              per-layer name, type and precision from the engine inspector or the build log
precision              which layers run INT8 for the nodes quantbench quantized; the lint
backend                :class:`~backend.TrtFamilyBackend`: which engine each variant becomes
=====================  ================================================================

A backend of such a library subclasses :class:`~backend.TrtFamilyBackend` with its ``name`` and
``library``. Importing this package imports neither the library nor cuda-python.
"""
