"""pumpfleet: predictive maintenance for fleets of oil & gas pumps.

The pure core: schema, simulator, features, models, metrics, registry and drift wrappers,
decision policies and the bundle format. Nothing here imports Ray at module level, reads
the environment or touches the disk at import time.
"""

__version__ = "0.1.0"
