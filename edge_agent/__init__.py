"""The device side of the edge: an offline scorer for one pump class on a Jetson (or any
Linux box), with a store-and-forward buffer and bundle updates that roll back by
themselves.

Imports numpy, onnxruntime (or TensorRT through it), pydantic, cryptography, paho-mqtt
(where readings come over MQTT) and the standard library, and from the core only the
modules a device needs (features, scoring, health, readings, records, bundle and
manifest; pyproject.toml's import-linter contract lists the others): never ray, torch,
mlflow or pandas.
"""

__version__ = "0.2.0"
