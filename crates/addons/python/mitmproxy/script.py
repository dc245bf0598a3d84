"""`mitmproxy.script.concurrent`: Periscope's worker runs hooks one at a time, out
of the proxy's process, so the decorator changes nothing."""


def concurrent(fn):
    return fn
