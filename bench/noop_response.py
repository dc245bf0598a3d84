"""The addons scenario's script: a `response` hook that does nothing, run unchanged by
Periscope (-s) and mitmdump (-s)."""


def response(flow):
    pass
