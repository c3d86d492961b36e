"""The device side of the edge: an offline scorer for one pump class on a Jetson (or any
Linux box), with a store-and-forward buffer and bundle updates that roll back by
themselves.

Imports numpy, onnxruntime (or TensorRT through it), pydantic, cryptography and the
standard library, and from the core only ``pumpfleet.features``, ``pumpfleet.bundle`` and
``pumpfleet.health`` (numpy and pydantic: the health scores Serve computes): never ray,
torch, mlflow or pandas.
"""

__version__ = "0.2.0"
