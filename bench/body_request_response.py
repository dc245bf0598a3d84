"""The addons scenario's second script: `request` and `response` hooks that read the
bodies (so both are sent to the worker), run unchanged by Periscope and mitmdump."""


def request(flow):
    flow.metadata["request_bytes"] = len(flow.request.content or b"")


def response(flow):
    flow.metadata["response_bytes"] = len(flow.response.content or b"")
