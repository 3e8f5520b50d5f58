"""The data package's error, in a module of its own that imports nothing of the package, so
every data module (sources, records, folder, pipeline) can raise it without importing another."""


class DataError(RuntimeError):
    """A dataset that cannot be read as asked: not prepared, unknown split, bad images..."""
