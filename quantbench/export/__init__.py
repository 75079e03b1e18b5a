"""The models a run writes: Q/DQ INT8 (TensorRT placement), its ONNX Runtime flavour, FP16, bias
correction, and the variants that bundle them."""
