"""`from mitmproxy import http`: the flow, request and response classes."""

from periscope_addons.flow import HTTPFlow, Headers, Request, Response  # noqa: F401
from periscope_addons.flow import Message  # noqa: F401
