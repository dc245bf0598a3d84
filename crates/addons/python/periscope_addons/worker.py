"""The worker's main loop: loads the scripts, reports which hooks they define, runs
hooks as the proxy asks and answers with what they changed (PROTOCOL.md)."""

import asyncio
import base64
import importlib.util
import inspect
import json
import logging
import os
import sys
import threading
import traceback
from collections import OrderedDict, deque

from periscope_addons import flow as flowmod
from periscope_addons.options import Loader, Options

# Hooks the proxy can call per flow, and those called once per script.
FLOW_HOOKS = (
    "requestheaders", "request", "responseheaders", "response", "error",
    "websocket_start", "websocket_message", "websocket_end", "tls_event",
    "tls_clienthello",
)
LIFE_HOOKS = ("load", "running", "configure", "done")

_out = None
_out_lock = threading.Lock()
_stdin = None
# Lines read while a hook waited for a body, to be handled after it.
_backlog = deque()


def send(message):
    line = json.dumps(message, separators=(",", ":")) + "\n"
    with _out_lock:
        _out.write(line.encode("utf-8"))
        _out.flush()


def log(level, message):
    send({"type": "log", "level": level, "message": message})


class ProtocolLogHandler(logging.Handler):
    """`logging` and ctx.log from scripts go to Periscope's event log."""

    LEVELS = {"DEBUG": "debug", "INFO": "info", "WARNING": "warn", "ERROR": "error",
              "CRITICAL": "error"}

    def emit(self, record):
        try:
            log(self.LEVELS.get(record.levelname, "info"), self.format(record))
        except Exception:  # a log line must never break a hook
            pass


class Script:
    """One -s file: its module, the addons in it (the module and its `addons`,
    recursively), and the file's mtime for reloads."""

    def __init__(self, path):
        self.path = os.path.abspath(path)
        self.name = os.path.basename(path)
        self.module = None
        self.addons = []
        self.mtime = None
        self.error = None
        self.last_exception = None

    def load(self, options):
        self.mtime = _mtime(self.path)
        self.error = None
        self.addons = []
        modname = "__periscope_script_" + str(abs(hash(self.path)))
        spec = importlib.util.spec_from_file_location(modname, self.path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[modname] = module
        sys.path.insert(0, os.path.dirname(self.path))
        try:
            spec.loader.exec_module(module)
        except BaseException as exc:
            self.module = None
            self.error = _load_error(self.path, exc)
            return False
        finally:
            try:
                sys.path.remove(os.path.dirname(self.path))
            except ValueError:
                pass
        self.module = module
        self.addons = list(_traverse(module))
        loader = Loader(options)
        for addon in self.addons:
            if not self.call_life(addon, "load", loader):
                if _is_options_error(self.last_exception):
                    self.error = f"{self.path}: OptionsError: {self.last_exception}"
                else:
                    self.error = f"{self.path}: its load hook raised (the traceback is in the log)"
                return False
        return True

    def call_life(self, addon, hook, *args):
        fn = getattr(addon, hook, None)
        if not callable(fn):
            return True
        try:
            run_to_end(fn(*args))
            return True
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            self.last_exception = exc
            log("error", f"{self.name}: {hook} raised:\n{_format_tb(exc)}")
            return False

    def hooks(self):
        return sorted({h for a in self.addons for h in FLOW_HOOKS if callable(getattr(a, h, None))})


_loop = None


def run_to_end(value):
    """mitmproxy awaits a hook written as `async def`; here it runs to its end before
    the answer goes back (the worker runs one hook at a time). One event loop serves
    every call, so what a script schedules on it lives on between calls."""
    global _loop
    if not inspect.isawaitable(value):
        return value
    if _loop is None:
        _loop = asyncio.new_event_loop()
    return _loop.run_until_complete(value)


def _is_options_error(exc):
    from mitmproxy.exceptions import OptionsError

    return isinstance(exc, OptionsError)


def _traverse(addon):
    yield addon
    children = getattr(addon, "addons", None)
    if isinstance(children, (list, tuple)):
        for child in children:
            yield from _traverse(child)


def _mtime(path):
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _load_error(path, exc):
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}: {type(exc).__name__}: {exc.msg}"
    tb = traceback.extract_tb(exc.__traceback__)
    in_script = [f for f in tb if os.path.abspath(f.filename) == path]
    frame = in_script[-1] if in_script else (tb[-1] if tb else None)
    where = f"{frame.filename}:{frame.lineno}" if frame else path
    return f"{where}: {type(exc).__name__}: {exc}"


def _format_tb(exc):
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()


class Worker:
    def __init__(self, paths):
        # The scripts' own options as the user set them (`--set`, the config file).
        preset = json.loads(os.environ.get("PERISCOPE_ADDON_OPTIONS") or "{}")
        self.options = Options(preset)
        self.scripts = [Script(p) for p in paths]
        self.metadata = OrderedDict()  # flow id -> flow.metadata, kept across hooks
        import mitmproxy.ctx as ctx

        ctx.options = self.options
        self.ctx = ctx

    def report(self, kind):
        send({
            "type": kind,
            "scripts": [
                {"path": s.path, "hooks": s.hooks(), "error": s.error} for s in self.scripts
            ],
        })

    def start(self):
        for script in self.scripts:
            if not script.load(self.options):
                script.addons = []
        unknown = self.options.unknown_presets()
        if unknown and self.scripts and not any(s.error for s in self.scripts):
            message = f"unknown option {unknown[0]!r}: no script adds it (loader.add_option)"
            # At Periscope's start a typo stops it, as in mitmproxy; scripts changed
            # while it runs may well not use what was set for the ones before.
            if os.environ.get("PERISCOPE_ADDON_OPTIONS_STRICT") == "1":
                self.scripts[0].error = f"{self.scripts[0].path}: {message}"
            else:
                log("warn", message)
        self.lifecycle_after_load(self.scripts, starting=True)
        self.report("ready")

    def lifecycle_after_load(self, scripts, starting=False):
        names = self.options.keys()
        for script in scripts:
            for addon in script.addons:
                if not script.call_life(addon, "configure", names):
                    # As in mitmproxy, an option a script refuses stops the start.
                    if starting and not script.error and _is_options_error(script.last_exception):
                        script.error = f"{script.path}: OptionsError: {script.last_exception}"
        for script in scripts:
            for addon in script.addons:
                script.call_life(addon, "running")

    def check_reload(self):
        changed = [s for s in self.scripts if _mtime(s.path) != s.mtime]
        for script in changed:
            for addon in script.addons:
                script.call_life(addon, "done")
            log("info", f"reloading script {script.name}")
            if not script.load(self.options):
                script.addons = []
        if changed:
            self.lifecycle_after_load(changed)
            self.report("hooks")

    def flow_metadata(self, flow_id):
        meta = self.metadata.get(flow_id)
        if meta is None:
            meta = self.metadata[flow_id] = {}
            while len(self.metadata) > 10000:
                self.metadata.popitem(last=False)
        else:
            self.metadata.move_to_end(flow_id)
        return meta

    def call(self, message):
        hook = message["hook"]
        if hook == "tls_clienthello":
            return self.call_client_hello(message)
        call_id = message["id"]
        flow = flowmod.HTTPFlow(message["flow"], self.flow_metadata(message["flow"]["id"]),
                                fetch=lambda side: self.fetch_body(call_id, side),
                                deferred=message.get("deferred") or ())
        args = [flow]
        if hook == "tls_event":
            args.append(message.get("event"))
        before = flow._snapshot()
        # A script whose hook raises has its changes undone: the flow goes on as it came.
        errors = self.run_hook(hook, args, flow._save, flow._restore)
        result = {"type": "result", "id": message["id"], "changes": flowmod.diff(before, flow)}
        if errors:
            result["errors"] = errors
        if message.get("last"):
            self.metadata.pop(message["flow"]["id"], None)
        send(result)

    def run_hook(self, hook, args, save=None, restore=None):
        """Runs `hook` of every addon that defines it, in script order. One that raises
        is logged with its traceback and, given `save`/`restore`, what it changed is put
        back. Returns the errors, a line each."""
        errors = []
        for script in self.scripts:
            for addon in script.addons:
                fn = getattr(addon, hook, None)
                if not callable(fn):
                    continue
                saved = save() if save else None
                try:
                    run_to_end(fn(*args))
                except BaseException as exc:
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                    if restore:
                        restore(saved)
                    log("error", f"{script.name}: {hook} raised:\n{_format_tb(exc)}")
                    errors.append(f"{script.name}: {hook} raised {type(exc).__name__}: {exc}")
        return errors

    def call_client_hello(self, message):
        """A connection, not a flow: every script sees the ClientHello; one that sets
        `ignore_connection` has the connection passed through. (A hello the runtime
        cannot read fails this call in `main`, and the connection is intercepted.)"""
        from mitmproxy import tls

        data = tls.ClientHelloData(message.get("client_hello") or {})
        errors = self.run_hook("tls_clienthello", [data])
        changes = {"ignore_connection": True} if data.ignore_connection else {}
        result = {"type": "result", "id": message["id"], "changes": changes}
        if errors:
            result["errors"] = errors
        send(result)

    def fetch_body(self, call_id, side):
        """A body the call left out, which a script reads: asked of the proxy, whose
        answer is awaited here (the lines that come before it wait their turn in the
        backlog). `None` when the proxy has none to give."""
        send({"type": "body", "id": call_id, "side": side})
        while True:
            line = _stdin.readline()
            if not line:
                raise EOFError("the proxy closed the worker's input")
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if message.get("type") == "body" and message.get("id") == call_id \
                    and message.get("side") == side:
                content = message.get("content")
                return None if content is None else base64.b64decode(content)
            _backlog.append(line)

    def done(self):
        for script in self.scripts:
            for addon in script.addons:
                script.call_life(addon, "done")


def main():
    global _out
    # The protocol owns the real stdout; what scripts print goes to stderr.
    _out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    handler = ProtocolLogHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.INFO)

    global _stdin
    _stdin = sys.stdin.buffer
    worker = Worker(sys.argv[1:])
    worker.start()
    while True:
        line = _backlog.popleft() if _backlog else _stdin.readline()
        if not line:
            break
        try:
            message = json.loads(line)
        except ValueError:
            log("error", f"periscope_addons: not a JSON line: {line[:80]!r}")
            continue
        kind = message.get("type")
        if kind == "hook":
            worker.check_reload()
            try:
                worker.call(message)
            except Exception as exc:
                # Whatever the runtime could not handle ends this call, not the worker
                # (and with it every script's state): the flow goes on unchanged.
                log("error", f"periscope_addons: {message.get('hook')} failed:\n{_format_tb(exc)}")
                send({"type": "result", "id": message.get("id"), "changes": {},
                      "errors": [f"periscope_addons: {type(exc).__name__}: {exc}"]})
        elif kind == "reload":
            worker.check_reload()
        elif kind == "options":
            worker.options.update(**message.get("values", {}))
        elif kind == "shutdown":
            break
        # "body": the answer to a fetch of a call that has ended (a hook that raised
        # while waiting): nothing waits for it.
    worker.done()


if __name__ == "__main__":
    main()
