//! The `orderflow` binary's library: what `dev`, `worker`, `api` and `migrate` share, and what
//! the end-to-end tests start the same way.
//!
//! - [`config`]: settings from environment variables, with defaults that serve `orderflow dev`.
//! - [`devserver`]: finds or starts `temporal server start-dev`, and registers search attributes.
//! - [`run`]: connects to Temporal and the database, runs the worker and the API.
//!
//! Business logic never lives here: it is in `workflows/`, `activities/` and `api/`.

pub mod config;
pub mod devserver;
pub mod run;
