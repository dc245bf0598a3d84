"""`from mitmproxy import ctx`: the options and the log of the running proxy."""

import logging as _logging

options = None  # set by the worker


class _Log:
    def debug(self, text):
        _logging.getLogger("mitmproxy").debug(text)

    def info(self, text):
        _logging.getLogger("mitmproxy").info(text)

    def alert(self, text):
        _logging.getLogger("mitmproxy").warning(text)

    def warn(self, text):
        _logging.getLogger("mitmproxy").warning(text)

    warning = warn

    def error(self, text):
        _logging.getLogger("mitmproxy").error(text)


log = _Log()
master = None
