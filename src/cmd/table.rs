//! The command table: every command's name, arity, flags and key positions, in one place.
//!
//! Arity follows Redis: positive = exact argument count (name included), negative = at least
//! that many. Key positions (first, last, step; last -1 = through the end) drive COMMAND INFO,
//! COMMAND GETKEYS, the key specs clients such as redis-py read, and EXEC's slot locking.

use super::{CmdResult, Ctx};
use crate::resp::Args;
use std::collections::HashMap;
use std::sync::LazyLock;

pub type Handler = for<'a, 'n> fn(&mut Ctx<'a, 'n>, Args<'_>) -> CmdResult;

/// One command (or subcommand).
pub struct CommandSpec {
    /// Lowercase name; subcommands are `container|sub`.
    pub name: &'static str,
    pub arity: i32,
    /// Redis command flags (`write`, `readonly`, `fast`, ...) plus Meridian's internal ones:
    /// `no_auth` (allowed before AUTH), `txn_control` (runs even inside MULTI),
    /// `keyspace_wide` (touches every slot: EXEC cannot pre-lock around it).
    pub flags: &'static [&'static str],
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
    pub group: &'static str,
    pub summary: &'static str,
    pub since: &'static str,
    pub handler: Handler,
    pub subcommands: &'static [CommandSpec],
}

impl CommandSpec {
    pub fn arity_ok(&self, n: usize) -> bool {
        let n = n as i32;
        if self.arity >= 0 {
            n == self.arity
        } else {
            n >= -self.arity
        }
    }

    pub fn has_flag(&self, f: &str) -> bool {
        self.flags.contains(&f)
    }

    /// Redis flags only (internal ones are not reported by COMMAND).
    pub fn public_flags(&self) -> impl Iterator<Item = &'static str> {
        self.flags
            .iter()
            .copied()
            .filter(|f| !matches!(*f, "txn_control" | "keyspace_wide"))
    }

    /// Positions of the keys in `args` (by the first/last/step rule), without allocating: a
    /// pipeline's keys are warmed in the caches through it (`server::conn`).
    pub fn key_positions_iter(&self, argc: usize) -> impl Iterator<Item = usize> {
        let last = if self.first_key <= 0 || argc as i32 <= self.first_key {
            0 // empty range: no key
        } else if self.last_key < 0 {
            argc as i32 + self.last_key
        } else {
            self.last_key.min(argc as i32 - 1)
        };
        (self.first_key.max(1)..=last)
            .step_by(self.step.max(1) as usize)
            .map(|i| i as usize)
    }

    /// Positions of the keys in `args` (by the first/last/step rule).
    pub fn key_positions(&self, argc: usize) -> Vec<usize> {
        self.key_positions_iter(argc).collect()
    }
}

/// Declares a command compactly: `spec!(name, arity, [flags], first, last, step, group,
/// since, summary, handler)`.
#[macro_export]
macro_rules! spec {
    ($name:literal, $arity:expr, [$($f:literal),*], $first:expr, $last:expr, $step:expr, $group:literal, $since:literal, $summary:literal, $handler:expr) => {
        $crate::cmd::table::CommandSpec {
            name: $name, arity: $arity, flags: &[$($f),*], first_key: $first, last_key: $last, step: $step,
            group: $group, summary: $summary, since: $since, handler: $handler, subcommands: &[],
        }
    };
    ($name:literal, $arity:expr, [$($f:literal),*], $first:expr, $last:expr, $step:expr, $group:literal, $since:literal, $summary:literal, $handler:expr, $subs:expr) => {
        $crate::cmd::table::CommandSpec {
            name: $name, arity: $arity, flags: &[$($f),*], first_key: $first, last_key: $last, step: $step,
            group: $group, summary: $summary, since: $since, handler: $handler, subcommands: $subs,
        }
    };
}

/// Every command family's table.
pub fn families() -> impl Iterator<Item = &'static CommandSpec> {
    [
        super::strings::COMMANDS,
        super::bits::COMMANDS,
        super::counters::COMMANDS,
        super::keys::COMMANDS,
        super::expire::COMMANDS,
        super::txn::COMMANDS,
        super::connection::COMMANDS,
        super::server::COMMANDS,
        super::introspect::COMMANDS,
        super::object::COMMANDS,
        super::migrate::COMMANDS,
        super::regions::COMMANDS,
        super::cluster::COMMANDS,
        super::lease::COMMANDS,
        super::tracking::COMMANDS,
        super::hotkeys::COMMANDS,
    ]
    .into_iter()
    .flatten()
}

static TABLE: LazyLock<HashMap<&'static [u8], &'static CommandSpec>> =
    LazyLock::new(|| families().map(|c| (c.name.as_bytes(), c)).collect());

/// Finds a command by name, case-insensitively, without allocating.
#[inline]
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    let mut buf = [0u8; 32];
    if name.len() > buf.len() {
        return None;
    }
    let lower = &mut buf[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    TABLE.get(&*lower).copied()
}

/// Finds a subcommand spec (`CLIENT SETNAME` → `client|setname`).
pub fn lookup_sub(container: &'static CommandSpec, sub: &[u8]) -> Option<&'static CommandSpec> {
    let prefix = container.name.len() + 1;
    container
        .subcommands
        .iter()
        .find(|s| s.name.len() > prefix && s.name.as_bytes()[prefix..].eq_ignore_ascii_case(sub))
}

/// Finds the subcommand `args[1]` of `container` and checks its arity, with Redis's errors.
pub fn check_sub(
    container: &'static CommandSpec,
    args: Args<'_>,
) -> Result<&'static CommandSpec, super::CmdError> {
    let sub = args.get(1);
    let Some(spec) = lookup_sub(container, sub) else {
        return Err(super::CmdError::Msg(format!(
            "ERR unknown subcommand '{}'. Try {} HELP.",
            String::from_utf8_lossy(&sub[..sub.len().min(128)]),
            container.name.to_ascii_uppercase()
        )));
    };
    if !spec.arity_ok(args.len()) {
        return Err(super::CmdError::Arity(spec.name.to_string()));
    }
    Ok(spec)
}

/// Runs a container command's subcommand, with Redis's errors for unknown ones and arity.
pub fn dispatch_sub(ctx: &mut Ctx<'_, '_>, args: Args<'_>) -> CmdResult {
    let container = super::lookup(args.get(0)).expect("container is in the table");
    let spec = check_sub(container, args)?;
    (spec.handler)(ctx, args)
}

/// Every command, sorted by name.
pub fn all() -> Vec<&'static CommandSpec> {
    let mut v: Vec<_> = families().collect();
    v.sort_by_key(|c| c.name);
    v
}
