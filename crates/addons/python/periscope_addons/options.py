"""ctx.options and loader.add_option, as mitmproxy's scripts use them."""


class Options:
    def __init__(self):
        object.__setattr__(self, "_values", {})
        object.__setattr__(self, "_specs", {})

    def add(self, name, typespec, default, help="", choices=None):
        self._specs[name] = (typespec, default, help, choices)
        self._values.setdefault(name, default)

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
