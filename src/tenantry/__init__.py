"""tenantry: the Python backend a multi-tenant SaaS starts from."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tenantry")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
