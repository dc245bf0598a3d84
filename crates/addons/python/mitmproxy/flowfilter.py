"""A subset of mitmproxy's filter language for scripts (`flowfilter.parse`/`match`):
~q ~s ~e ~all, ~m ~d ~u ~h ~hq ~hs ~b ~bq ~bs ~c ~t, !, &, |, parentheses."""

import re
import shlex


TFilter = None  # the type of a parsed filter, for annotations


class _F:
    def __init__(self, fn):
        self.fn = fn

    def __call__(self, flow):
        return bool(self.fn(flow))


def _headers(msg):
    return "\n".join(f"{k}: {v}" for k, v in msg.headers.fields) if msg else ""


def _body(msg):
    return (msg.get_text(strict=False) or "") if msg is not None and msg.content is not None else ""


def _atom(name, arg):
    rx = re.compile(arg, re.I) if arg is not None else None
    table = {
        "~q": lambda f: f.response is None,
        "~s": lambda f: f.response is not None,
        "~e": lambda f: f.error is not None,
        "~all": lambda f: True,
        "~m": lambda f: rx.search(f.request.method),
        "~d": lambda f: rx.search(f.request.host) or rx.search(f.request.pretty_host),
        "~u": lambda f: rx.search(f.request.pretty_url) or rx.search(f.request.url),
        "~h": lambda f: rx.search(_headers(f.request)) or rx.search(_headers(f.response)),
        "~hq": lambda f: rx.search(_headers(f.request)),
        "~hs": lambda f: rx.search(_headers(f.response)),
        "~b": lambda f: rx.search(_body(f.request)) or rx.search(_body(f.response)),
        "~bq": lambda f: rx.search(_body(f.request)),
        "~bs": lambda f: rx.search(_body(f.response)),
        "~c": lambda f: f.response is not None and f.response.status_code == int(arg),
        "~t": lambda f: rx.search(f.request.headers.get("content-type", "")
                                  + (f.response.headers.get("content-type", "") if f.response else "")),
    }
    if name not in table:
        raise ValueError(f"unknown filter {name}")
    return table[name]


_NOARG = {"~q", "~s", "~e", "~all"}


def parse(text):
    if not text or not text.strip():
        return None
    lexer = shlex.shlex(text, posix=True, punctuation_chars="!&|()")
    lexer.wordchars += "~.-*/:?=[]^$\\+{},"
    tokens = list(lexer)
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take():
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def expr():
        left = term()
        while peek() == "|":
            take()
            right = term()
            left = (lambda a, b: lambda f: a(f) or b(f))(left, right)
        return left

    def term():
        left = factor()
        while peek() not in (None, "|", ")"):
            if peek() == "&":
                take()
            right = factor()
            left = (lambda a, b: lambda f: a(f) and b(f))(left, right)
        return left

    def factor():
        token = take()
        if token == "!":
            inner = factor()
            return lambda f: not inner(f)
        if token == "(":
            inner = expr()
            take()
            return inner
        if token.startswith("~"):
            if token in _NOARG:
                return _atom(token, None)
            return _atom(token, take())
        rx = re.compile(token, re.I)
        return lambda f: rx.search(f.request.pretty_url)

    result = expr()
    if pos != len(tokens):
        raise ValueError(f"invalid filter: {text}")
    return _F(result)


def match(flt, flow):
    """True when `flow` matches; no filter matches everything (as in mitmproxy)."""
    if isinstance(flt, str):
        flt = parse(flt)
    return flt(flow) if flt else True
