"""`from mitmproxy import addonmanager` (type hints of `load(loader)`)."""

from periscope_addons.options import Loader  # noqa: F401
