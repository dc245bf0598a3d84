"""ctx.options and loader.add_option, as mitmproxy's scripts use them."""


import collections.abc
import typing


def _options_error(message):
    from mitmproxy.exceptions import OptionsError

    return OptionsError(message)


def convert(name, typespec, value):
    """`value` as the user wrote it (a string, or a list of strings for a list
    option) made the option's type, as mitmproxy's `--set` does."""
    origin = typing.get_origin(typespec)
    args = typing.get_args(typespec)
    if origin is typing.Union and type(None) in args:
        if value is None or (isinstance(value, str) and value.lower() in ("", "none", "null")):
            return None
        inner = [a for a in args if a is not type(None)]
        return convert(name, inner[0] if inner else str, value)
    if origin in (list, tuple, collections.abc.Sequence) or typespec in (list, tuple):
        items = value if isinstance(value, list) else [value]
        item_type = args[0] if args else str
        return [convert(name, item_type, item) for item in items]
    if isinstance(value, list):
        raise _options_error(f"option {name} takes one value, not a list")
    if typespec is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "yes", "on", "1"):
            return True
        if text in ("false", "no", "off", "0"):
            return False
        raise _options_error(f"option {name}: {value!r} is not true or false")
    if typespec in (int, float):
        try:
            return typespec(value)
        except (TypeError, ValueError):
            kind = "an integer" if typespec is int else "a number"
            raise _options_error(f"option {name}: {value!r} is not {kind}") from None
    return value if isinstance(value, str) else str(value)


class Options:
    def __init__(self, preset=None):
        object.__setattr__(self, "_values", {})
        object.__setattr__(self, "_specs", {})
        # What the user set for options the scripts add (`--set`, the config file).
        object.__setattr__(self, "_preset", dict(preset or {}))

    def add(self, name, typespec, default, help="", choices=None):
        self._specs[name] = (typespec, default, help, choices)
        if name in self._preset:
            value = convert(name, typespec, self._preset[name])
            if choices and value not in choices:
                raise _options_error(f"option {name}: {value!r} is not one of {', '.join(map(str, choices))}")
            self._values[name] = value
        else:
            self._values.setdefault(name, default)

    def unknown_presets(self):
        """Options the user set that no script added."""
        return sorted(set(self._preset) - set(self._specs))

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no option named {name!r}") from None

    def __setattr__(self, name, value):
        self._values[name] = value

    def __contains__(self, name):
        return name in self._values

    def keys(self):
        return set(self._values)

    def update(self, **kwargs):
        self._values.update(kwargs)
        return set(kwargs)


class Loader:
    def __init__(self, options):
        self._options = options

    def add_option(self, name, typespec, default, help, choices=None):
        self._options.add(name, typespec, default, help, choices)

    def add_command(self, path, func):
        pass
