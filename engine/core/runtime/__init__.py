"""The model runtime: what runs a family's modules and keeps their bytes independent of the batch.

``backends`` (torch, torch.compile, ONNX Runtime, TensorRT) over ``graphs`` (a module's graph spec
and its ONNX export) and ``tensorrt``; ``batching`` and ``row_invariant`` (batch-invariant
arithmetic on the CPU); ``seeding`` (per-sample noise); ``stopwatch`` (the one timing type).
"""
