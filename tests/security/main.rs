//! The hardening findings replayed as an attacker would, each asserting the fixed behaviour
//! (run by `scripts/test` with the rest of the workspace):
//!
//! - `connections`: idle sockets, half-sent headers, short bodies under a large
//!   `Content-Length`, and more idle connections than the cap (or the open-file limit) allow
//!   must neither stay open nor keep `/healthz` out (finding 3);
//! - `files`: a configuration or secret file that is a device (`/dev/zero`), a FIFO, a
//!   directory or too large is refused at once, naming the file (finding 5).
//!
//! Timeouts are configured short (about a second); the tests assert what happens, and use
//! generous bounds only so that a regression fails instead of hanging.

mod connections;
mod files;

pub use huitong_tests::huitong_bin;
