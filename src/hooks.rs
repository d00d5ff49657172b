//! Middleware around commands and pipelines.
//!
//! Before hooks run in the order they were configured and may rewrite the
//! command, answer it themselves (short-circuit) or reject it. After hooks
//! run in reverse order and may replace the result. Transactions use the
//! pipeline hooks. Hooks are plain functions: they run inline on the
//! calling task and must not block.

use crate::cmd::Cmd;
use crate::{Error, Value};

/// What a hook sees of the connection a command is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HookContext<'a> {
    /// The server's host, or the Unix socket path.
    pub host: &'a str,
    /// The server's port (0 for a Unix socket).
    pub port: u16,
    /// The database selected by the configuration (0 when none).
    pub database: u32,
}

/// What a before hook decides.
#[derive(Debug)]
#[non_exhaustive]
pub enum Before<T> {
    /// Go on (with the command as the hook may have rewritten it).
    Continue,
    /// Do not send anything: this is the result.
    Reply(Result<T, Error>),
}

/// Middleware run around every command and pipeline of a connection.
/// Every method has a default that does nothing.
pub trait Hook: Send + Sync + 'static {
    /// Runs before a command is sent; may rewrite it, answer it or reject
    /// it (`Before::Reply(Err(..))`).
    fn before_command(&self, _ctx: &HookContext<'_>, _cmd: &mut Cmd) -> Before<Value> {
        Before::Continue
    }

    /// Runs after a command's result is known; returns the result to give
    /// the caller (or to the next after hook).
    fn after_command(
        &self,
        _ctx: &HookContext<'_>,
        _cmd: &Cmd,
        result: Result<Value, Error>,
    ) -> Result<Value, Error> {
        result
    }

    /// Runs before a pipeline or transaction is sent.
    fn before_pipeline(&self, _ctx: &HookContext<'_>, _cmds: &mut Vec<Cmd>) -> Before<Vec<Value>> {
        Before::Continue
    }

    /// Runs after a pipeline's or transaction's result is known.
    fn after_pipeline(
        &self,
        _ctx: &HookContext<'_>,
        _cmds: &[Cmd],
        result: Result<Vec<Value>, Error>,
    ) -> Result<Vec<Value>, Error> {
        result
    }
}
