"""Periscope's stand-in for the parts of mitmproxy's API that addon scripts import.
Not mitmproxy: see crates/addons/README.md for what is covered."""
