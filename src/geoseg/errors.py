"""Exceptions raised for bad input, bad models and unwritable outputs.

Every error a user can cause is a ``GeosegError``; the CLI prints its message as one line and
exits with status 2. Each subclass also inherits the matching built-in, so callers can catch
``ValueError`` or ``OSError`` as usual.
"""


class GeosegError(Exception):
    """Root of all errors caused by input, options or environment rather than by a bug."""


class RasterError(GeosegError, ValueError):
    """A raster cannot be read or is unusable (no CRS, no geotransform, unreadable pixels)."""


class ModelError(GeosegError, ValueError):
    """A model file is corrupt, not TorchScript, lacks ``geoseg.json`` or breaks the contract."""


class OptionsError(GeosegError, ValueError):
    """Options are invalid or conflict with each other."""


class OutputError(GeosegError, OSError):
    """The output cannot be written (exists without overwrite, folder missing, not writable)."""


class RemoteReadError(GeosegError, OSError):
    """Reading a remote raster failed after GDAL's retries: maybe a passing outage, so the batch
    task that hit it is retried too; if it keeps failing, it is reported like bad input."""
