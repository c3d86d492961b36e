"""The local Ray the benchmarks measure: a new instance on this machine, whatever
``RAY_ADDRESS`` says.

Not ``ray_jobs._ray.init_ray``: that joins the cluster in ``RAY_ADDRESS`` where one is set,
and a benchmark that times and counts this machine's processes must start its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def local_ray(cpus: int, *, progress_bars: bool = True) -> Iterator[None]:
    """A new local Ray of ``cpus`` CPUs for the ``with`` block, shut down on leaving it:
    ``address="local"`` (never a head already running here), no dashboard, the workers'
    logs not forwarded to the driver, bound to loopback as ``init_ray`` binds it.
    ``progress_bars=False`` turns Ray Data's progress bars off."""
    import ray  # here: the benchmarks' arms that use no Ray do not pay for importing it

    ray.init(
        address="local",
        num_cpus=cpus,
        include_dashboard=False,
        log_to_driver=False,
        _node_ip_address="127.0.0.1",
    )
    try:
        if not progress_bars:
            ray.data.DataContext.get_current().enable_progress_bars = False
        yield
    finally:
        ray.shutdown()
