//! The certificate authority: being written.
