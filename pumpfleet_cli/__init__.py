"""The front door: the ``pumpfleet`` command and the demo's orchestration."""
