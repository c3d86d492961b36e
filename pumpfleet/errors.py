"""Domain errors. The edges translate them: a one-line exit in the CLI, a 4xx in Serve."""


class PumpfleetError(Exception):
    """Base of every error this project raises on purpose."""


class InputError(PumpfleetError):
    """Something the user gave us is wrong: a path, a number, a file's contents."""


class DataError(PumpfleetError):
    """The data cannot be used as it is (empty, wrong schema, too little of it)."""


class RegistryError(PumpfleetError):
    """The model registry does not hold what was asked for."""


class BundleError(PumpfleetError):
    """An edge bundle is malformed, tampered with or signed by the wrong key."""


class ParityError(PumpfleetError):
    """An exported model does not score like the model it was exported from."""
