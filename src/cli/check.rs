//! One line of `cco doctor`'s report: what was checked, how it went, and the fix. A leaf, so
//! the subcommands that contribute checks (`store`) need not import `doctor`.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

pub struct Check {
    pub level: Level,
    pub what: String,
    pub fix: Option<String>,
}
