"""Periscope's addon runtime: runs mitmproxy-style addon scripts in a worker process
that Periscope starts, speaking the protocol in crates/addons/PROTOCOL.md over
stdin/stdout. Installed nowhere: Periscope writes this package to a directory of its
own and puts it on the worker's PYTHONPATH."""
