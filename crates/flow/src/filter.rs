//! The filter language (mitmproxy's): being written.
