"""Flows as scripts see them: mitmproxy's common API over the JSON the proxy sends,
and the changes a hook made, as the diff the proxy applies."""

import base64
import copy as _copy
import json as _json
import urllib.parse


def _value_in(latin1: str) -> str:
    # Header values travel as one code point per byte; scripts see them as mitmproxy
    # shows them: UTF-8, with undecodable bytes kept as surrogates.
    return latin1.encode("latin-1").decode("utf-8", "surrogateescape")


def _value_out(value) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value).encode("utf-8", "surrogateescape").decode("latin-1")


class Headers:
    """A multi-dict of header fields, case-insensitive, in wire order (as mitmproxy's)."""

    def __init__(self, fields=None, **kwargs):
        self.fields = []
        if isinstance(fields, Headers):
            self.fields = list(fields.fields)
        elif isinstance(fields, dict):
            self.fields = [(str(k), _str(v)) for k, v in fields.items()]
        elif fields:
            self.fields = [(_str(k), _str(v)) for k, v in fields]
        for k, v in kwargs.items():
            self.fields.append((k.replace("_", "-"), _str(v)))

    def __getitem__(self, name):
        for k, v in self.fields:
            if k.lower() == name.lower():
                return v
        raise KeyError(name)

    def get(self, name, default=None):
        try:
            return self[name]
        except KeyError:
            return default

    def get_all(self, name):
        return [v for k, v in self.fields if k.lower() == name.lower()]

    def set_all(self, name, values):
        self._remove(name)
        for v in values:
            self.fields.append((name, _str(v)))

    def add(self, name, value):
        self.fields.append((name, _str(value)))


    def _remove(self, name):
        self.fields = [(k, v) for k, v in self.fields if k.lower() != name.lower()]

    def __setitem__(self, name, value):
        for i, (k, _) in enumerate(self.fields):
            if k.lower() == name.lower():
                self.fields[i] = (k, _str(value))
                self.fields = self.fields[: i + 1] + [
                    f for f in self.fields[i + 1 :] if f[0].lower() != name.lower()
                ]
                return
        self.fields.append((name, _str(value)))

    def __delitem__(self, name):
        if name not in self:
            raise KeyError(name)
        self._remove(name)

    def pop(self, name, *default):
        try:
            value = self[name]
        except KeyError:
            if default:
                return default[0]
            raise
        self._remove(name)
        return value

    def __contains__(self, name):
        return any(k.lower() == str(name).lower() for k, _ in self.fields)

    def __iter__(self):
        seen = []
        for k, _ in self.fields:
            if k.lower() not in (s.lower() for s in seen):
                seen.append(k)
        return iter(seen)

    def __len__(self):
        return len(list(iter(self)))

    def keys(self):
        return list(iter(self))

    def values(self):
        return [self[k] for k in self]

    def items(self, multi=False):
        if multi:
            return list(self.fields)
        return [(k, self[k]) for k in self]

    def update(self, other=(), **kwargs):
        items = other.items() if hasattr(other, "items") else other
        for k, v in items:
            self[k] = v
        for k, v in kwargs.items():
            self[k] = v

    def setdefault(self, name, default=None):
        if name not in self:
            self[name] = default
        return self[name]

    def __eq__(self, other):
        return isinstance(other, Headers) and self.fields == other.fields

    def __repr__(self):
        return f"Headers({self.fields!r})"


def _str(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)


class _QueryView:
    """flow.request.query: a multi-dict that writes back into the path."""

    def __init__(self, request):
        self._request = request

    def _items(self):
        return urllib.parse.parse_qsl(self._request._query_string(), keep_blank_values=True)

    def _set(self, items):
        self._request._set_query(items)

    def __getitem__(self, key):
        for k, v in self._items():
            if k == key:
                return v
        raise KeyError(key)

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def get_all(self, key):
        return [v for k, v in self._items() if k == key]

    def set_all(self, key, values):
        items = [(k, v) for k, v in self._items() if k != key]
        self._set(items + [(key, v) for v in values])

    def add(self, key, value):
        self._set(self._items() + [(key, value)])

    def __setitem__(self, key, value):
        items = self._items()
        out, done = [], False
        for k, v in items:
            if k == key:
                if not done:
                    out.append((k, value))
                    done = True
            else:
                out.append((k, v))
        if not done:
            out.append((key, value))
        self._set(out)

    def __delitem__(self, key):
        self._set([(k, v) for k, v in self._items() if k != key])

    def pop(self, key, *default):
        try:
            value = self[key]
        except KeyError:
            if default:
                return default[0]
            raise
        del self[key]
        return value

    def __contains__(self, key):
        return any(k == key for k, _ in self._items())

    def __iter__(self):
        return iter(dict(self._items()).keys())

    def __len__(self):
        return len(dict(self._items()))

    def keys(self):
        return list(self)

    def items(self, multi=False):
        return self._items() if multi else list(dict(self._items()).items())

    def __bool__(self):
        return bool(self._items())

    def __repr__(self):
        return f"MultiDictView({self._items()!r})"


class _FormView(_QueryView):
    def _items(self):
        return urllib.parse.parse_qsl(self._request.get_text(strict=False) or "", keep_blank_values=True)

    def _set(self, items):
        self._request.content = urllib.parse.urlencode(items).encode()
        self._request.headers.setdefault("content-type", "application/x-www-form-urlencoded")


class _NotFetched:
    """A body the call left out (PROTOCOL.md, `deferred`) that no script read yet.
    One instance, kept by deep copies (`flow.copy()`)."""

    def __repr__(self):
        return "<body not fetched>"

    def __deepcopy__(self, memo):
        return self


NOT_FETCHED = _NotFetched()


class Message:
    def __init__(self, data, fetch=None):
        self.headers = Headers([(n, _value_in(v)) for n, v in data.get("headers", [])])
        self.http_version = data.get("http_version", "HTTP/1.1")
        content = data.get("content")
        # `fetch`: the body is the proxy's until a script reads it (then fetched once).
        self._fetch = fetch
        if content is None and fetch is not None:
            self._content = NOT_FETCHED
        else:
            self._content = None if content is None else base64.b64decode(content)
        # What the proxy sent when it was fetched: a body read and left as it was is
        # no change.
        self._fetched = NOT_FETCHED
        self._from_proxy = False
        self.trailers = None
        self.timestamp_start = data.get("timestamp_start")
        self.timestamp_end = data.get("timestamp_end")

    def _copy(self):
        """A copy for undoing a hook's changes: as deep as a script can change it in
        place (headers; the rest are immutable values), far cheaper than deepcopy."""
        new = _copy.copy(self)
        new.headers = Headers(self.headers)
        if isinstance(self.trailers, Headers):
            new.trailers = Headers(self.trailers)
        return new

    def _body(self):
        if self._content is NOT_FETCHED:
            self._content = self._fetched = self._fetch()
        return self._content

    @property
    def content(self):
        return self._body()

    @content.setter
    def content(self, value):
        if isinstance(value, str):
            raise ValueError("Message content must be bytes, not str: use .text")
        self._content = value
        if value is not None and "content-length" in self.headers:
            self.headers["content-length"] = str(len(value))

    raw_content = content

    def _charset(self):
        ct = self.headers.get("content-type", "")
        for part in ct.split(";")[1:]:
            k, _, v = part.strip().partition("=")
            if k.lower() == "charset" and v:
                return v.strip('"')
        if "json" in ct:
            return "utf-8"
        return "utf-8"

    def get_content(self, strict=True):
        return self._body()

    def set_content(self, value):
        self.content = value

    def get_text(self, strict=True):
        content = self._body()
        if content is None:
            return None
        try:
            return content.decode(self._charset())
        except (UnicodeDecodeError, LookupError):
            if strict:
                raise
            return content.decode("utf-8", "replace")

    def set_text(self, text):
        if text is None:
            self.content = None
            return
        try:
            self.content = text.encode(self._charset())
        except LookupError:
            self.content = text.encode("utf-8")

    text = property(get_text, set_text)

    def json(self, **kwargs):
        return _json.loads(self.get_content(), **kwargs)

    def _state(self):
        # The fields as they are (compared cheaply); written out for the proxy only
        # when they changed (`_encode`).
        return {
            "headers": tuple(self.headers.fields),
            "content": self._content,
        }


class Request(Message):
    def __init__(self, data, fetch=None):
        super().__init__(data, fetch)
        self.method = data["method"]
        self.scheme = data["scheme"]
        self._host = data["host"]
        self.port = data["port"]
        self.path = data["path"]
        self.authority = ""

    @property
    def host(self):
        return self._host

    @host.setter
    def host(self, value):
        # As mitmproxy: a Host header that is there follows the new host, so the
        # request says where it now goes (mitmproxy's http-redirect-requests.py).
        self._host = value.decode("idna") if isinstance(value, bytes) else value
        self._follow_host()

    def _follow_host(self):
        if "host" in self.headers:
            host = self._host
            if ":" in host and not host.startswith("["):
                host = f"[{host}]"
            default = (self.scheme, self.port) in (("http", 80), ("https", 443))
            self.headers["host"] = host if default else f"{host}:{self.port}"

    @classmethod
    def make(cls, method, url, content=b"", headers=()):
        parsed = urllib.parse.urlsplit(url)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        request = cls({
            "method": method, "scheme": parsed.scheme, "host": parsed.hostname or "",
            "port": port, "path": (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else ""),
            "headers": [], "content": None,
        })
        request.headers = Headers(headers)
        request.content = content.encode() if isinstance(content, str) else content
        return request

    @property
    def pretty_host(self):
        host = self.headers.get("host")
        if host:
            return host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return self.host

    def _default_port(self):
        return (self.scheme, self.port) in (("http", 80), ("https", 443))

    @property
    def url(self):
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        if self._default_port():
            return f"{self.scheme}://{host}{self.path}"
        return f"{self.scheme}://{host}:{self.port}{self.path}"

    @url.setter
    def url(self, url):
        parsed = urllib.parse.urlsplit(url)
        self.scheme = parsed.scheme
        self._host = parsed.hostname or ""
        self.port = parsed.port or (443 if parsed.scheme == "https" else 80)
        self.path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
        self._follow_host()

    @property
    def pretty_url(self):
        host = self.pretty_host
        if self._default_port():
            return f"{self.scheme}://{host}{self.path}"
        return f"{self.scheme}://{host}:{self.port}{self.path}"

    @property
    def host_header(self):
        return self.headers.get("host")

    @host_header.setter
    def host_header(self, value):
        if value is None:
            self.headers.pop("host", None)
        else:
            self.headers["host"] = value

    def _query_string(self):
        return self.path.partition("?")[2]

    def _set_query(self, items):
        base = self.path.partition("?")[0]
        query = urllib.parse.urlencode(items)
        self.path = f"{base}?{query}" if query else base

    @property
    def query(self):
        return _QueryView(self)

    @query.setter
    def query(self, items):
        self._set_query(list(items.items()) if hasattr(items, "items") else list(items))

    @property
    def path_components(self):
        path = self.path.partition("?")[0]
        return tuple(urllib.parse.unquote(p) for p in path.split("/") if p)

    @property
    def cookies(self):
        jar = []
        for value in self.headers.get_all("cookie"):
            for part in value.split(";"):
                name, sep, val = part.strip().partition("=")
                if sep:
                    jar.append((name, val))
        return _CookieView(self, jar)

    @property
    def urlencoded_form(self):
        return _FormView(self)

    @urlencoded_form.setter
    def urlencoded_form(self, items):
        _FormView(self)._set(list(items.items()) if hasattr(items, "items") else list(items))

    def anticache(self):
        for name in ("if-modified-since", "if-none-match"):
            self.headers.pop(name, None)

    def _state(self):
        state = super()._state()
        state.update(method=self.method, scheme=self.scheme, host=self.host,
                     port=int(self.port), path=self.path)
        return state


class _CookieView:
    def __init__(self, request, jar):
        self._request, self._jar = request, jar

    def __getitem__(self, key):
        for k, v in self._jar:
            if k == key:
                return v
        raise KeyError(key)

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key):
        return any(k == key for k, _ in self._jar)

    def __setitem__(self, key, value):
        self._jar = [(k, v) for k, v in self._jar if k != key] + [(key, value)]
        self._write()

    def __delitem__(self, key):
        self._jar = [(k, v) for k, v in self._jar if k != key]
        self._write()

    def _write(self):
        if self._jar:
            self._request.headers["cookie"] = "; ".join(f"{k}={v}" for k, v in self._jar)
        else:
            self._request.headers.pop("cookie", None)

    def items(self, multi=False):
        return list(self._jar)

    def keys(self):
        return [k for k, _ in self._jar]

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self._jar)


class Response(Message):
    def __init__(self, data, fetch=None):
        super().__init__(data, fetch)
        self.status_code = data["status_code"]
        self.reason = data.get("reason", "")

    @classmethod
    def make(cls, status_code=200, content=b"", headers=()):
        if isinstance(content, str):
            content = content.encode()
        if isinstance(headers, dict):
            headers = list(headers.items())
        response = cls({"status_code": status_code, "reason": _reason(status_code),
                        "headers": [], "content": None})
        response.headers = Headers(headers)
        response._content = content
        if "content-length" not in response.headers and content is not None:
            response.headers["content-length"] = str(len(content))
        return response

    @property
    def cookies(self):
        return [v for v in self.headers.get_all("set-cookie")]

    def _state(self):
        state = super()._state()
        state.update(status_code=int(self.status_code), reason=self.reason)
        return state


def _reason(code):
    import http as _http

    try:
        return _http.HTTPStatus(code).phrase
    except ValueError:
        return ""


class Error:
    def __init__(self, msg, timestamp=None):
        self.msg = msg
        self.timestamp = timestamp

    def __str__(self):
        return self.msg


class Client:
    def __init__(self, data):
        peer = (data or {}).get("peer")
        self.peername = _addr(peer)
        self.address = self.peername
        self.sni = (data or {}).get("sni")


class Server:
    def __init__(self, data):
        self.address = _addr((data or {}).get("address")) if data else None
        self.peername = _addr((data or {}).get("peer")) if data else None


def _addr(text):
    if not text:
        return None
    host, _, port = text.rpartition(":")
    return (host.strip("[]"), int(port)) if port.isdigit() else (text, 0)


class WebSocketMessage:
    def __init__(self, data):
        self.from_client = data.get("from_client", False)
        self.is_text = data.get("is_text", True)
        self.content = base64.b64decode(data.get("content") or "")
        self.timestamp = data.get("timestamp")
        self.dropped = False

    @property
    def text(self):
        return self.content.decode("utf-8", "replace")

    def drop(self):
        self.dropped = True


class WebSocketData:
    def __init__(self, data):
        self.messages = [WebSocketMessage(m) for m in data.get("messages", [])]
        self.closed_by_client = data.get("closed_by_client")
        self.close_code = data.get("close_code")
        self.close_reason = data.get("close_reason")


class HTTPFlow:
    type = "http"

    def __init__(self, data, metadata, fetch=None, deferred=()):
        """`fetch(side)` gets a body the call left out (`deferred`: its sides)."""
        self.id = data["id"]

        def fetcher(side):
            return (lambda: fetch(side)) if fetch is not None and side in deferred else None

        self.request = Request(data["request"], fetcher("request"))
        self.response = (Response(data["response"], fetcher("response"))
                         if data.get("response") else None)
        if self.response is not None:
            self.response._from_proxy = True
        err = data.get("error")
        self.error = Error(err["msg"], err.get("timestamp")) if err else None
        self.client_conn = Client(data.get("client_conn"))
        self.server_conn = Server(data.get("server_conn"))
        self.marked = data.get("marked", "")
        self.comment = data.get("comment", "")
        self.metadata = metadata
        self.websocket = WebSocketData(data["websocket"]) if data.get("websocket") else None
        self.intercepted = False
        self.live = data.get("live", True)
        self.is_replay = data.get("is_replay")
        self._killed = False
        self._intercept = None
        self.timestamp_created = data.get("timestamp_created")

    def __repr__(self):
        status = self.response.status_code if self.response is not None else "-"
        return f"<HTTPFlow {self.request.method} {self.request.pretty_url} {status}>"

    @property
    def killable(self):
        return self.live and not self._killed

    def kill(self):
        self._killed = True
        self.error = Error("Connection killed.")

    def intercept(self):
        self.intercepted = True
        self._intercept = True

    def resume(self):
        self.intercepted = False
        self._intercept = False

    def copy(self):
        return _copy.deepcopy(self)

    @property
    def timestamp_start(self):
        return self.request.timestamp_start

    def _snapshot(self):
        return {
            "request": self.request._state(),
            "response": self.response._state() if self.response is not None else None,
            # A response made by a script (http.Response.make) is sent whole.
            "response_made": self.response is not None and not self.response._from_proxy,
            "marked": self.marked,
            "comment": self.comment,
        }

    def _save(self):
        response = self.response._copy() if self.response is not None else None
        return (self.request._copy(), response, self.marked, self.comment, self._killed,
                self._intercept, self.error)

    def _restore(self, saved):
        (self.request, self.response, self.marked, self.comment, self._killed,
         self._intercept, self.error) = saved


def _was(before, key, message):
    """What `key` was before the hook: a body not fetched then is what the proxy
    sent when a script read it."""
    value = before.get(key)
    if key == "content" and value is NOT_FETCHED:
        return message._fetched
    return value


def diff(before, flow):
    """What a hook changed, as the proxy applies it (PROTOCOL.md, `changes`)."""
    after = flow._snapshot()
    changes = {}
    req = {}
    for key, value in after["request"].items():
        if value is not NOT_FETCHED and value != _was(before["request"], key, flow.request):
            req[key] = value
    if req:
        changes["request"] = _encode(req)
    if after["response"] is not None:
        if after["response_made"] or before["response"] is None:
            # A new response (http.Response.make): sent whole.
            changes["response"] = _encode(dict(after["response"]))
            changes["response_new"] = True
        else:
            resp = {k: v for k, v in after["response"].items()
                    if v is not NOT_FETCHED and v != _was(before["response"], k, flow.response)}
            if resp:
                changes["response"] = _encode(resp)
    if after["marked"] != before["marked"]:
        changes["marked"] = bool(after["marked"])
    if after["comment"] != before["comment"]:
        changes["comment"] = str(after["comment"])
    if flow._killed:
        changes["kill"] = True
    if flow._intercept is not None:
        changes["intercept"] = flow._intercept
    return changes


def _encode(message):
    if "headers" in message:
        message["headers"] = [[n, _value_out(v)] for n, v in message["headers"]]
    if "content" in message:
        content = message["content"]
        message["content"] = None if content is None else base64.b64encode(content).decode()
    return message
