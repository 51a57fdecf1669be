//! `hooks:` in `p2pd.yaml`, and its per-torrent override in `torrents/*.yaml`: programs run on
//! a torrent's events (docs in `config/p2pd.yaml`; run by `crate::hooks`).

use serde::{Deserialize, Serialize};

use super::bounds;

/// A hook's command: the program and its arguments, run without a shell. Empty: none.
pub type Argv = Vec<String>;

/// Most arguments of one hook, and bytes of one argument.
pub const MAX_ARGS: usize = 64;
pub const MAX_ARG_BYTES: usize = 4096;

/// `hooks:` in `p2pd.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HooksConfig {
    /// Run when a torrent has downloaded and verified every piece (once per completion).
    pub on_complete: Argv,
    /// Run when a torrent enters the `error` state.
    pub on_error: Argv,
    /// Run when a torrent stops being managed (`p2pctl remove`, its file removed).
    pub on_removed: Argv,
    /// A hook still running after this long is killed (its whole process group).
    #[serde(deserialize_with = "bounds::number::<bounds::HookTimeoutSecs, _, _>")]
    pub timeout_secs: u64,
    /// Hooks running at once, at most; more wait their turn.
    #[serde(deserialize_with = "bounds::number::<bounds::HookMaxConcurrent, _, _>")]
    pub max_concurrent: u32,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            on_complete: Vec::new(),
            on_error: Vec::new(),
            on_removed: Vec::new(),
            timeout_secs: 60,
            max_concurrent: 4,
        }
    }
}

/// `hooks:` in a torrent file: each event given here replaces the daemon's (`[]`: none for
/// this torrent).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorrentHooks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_complete: Option<Argv>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<Argv>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_removed: Option<Argv>,
}

impl TorrentHooks {
    pub fn is_empty(&self) -> bool {
        *self == TorrentHooks::default()
    }
}

/// The commands of one torrent's hooks, its overrides applied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HookCommands {
    pub on_complete: Argv,
    pub on_error: Argv,
    pub on_removed: Argv,
}

impl HookCommands {
    pub fn resolve(daemon: &HooksConfig, torrent: &TorrentHooks) -> HookCommands {
        let pick = |own: &Option<Argv>, default: &Argv| own.clone().unwrap_or_else(|| default.clone());
        HookCommands {
            on_complete: pick(&torrent.on_complete, &daemon.on_complete),
            on_error: pick(&torrent.on_error, &daemon.on_error),
            on_removed: pick(&torrent.on_removed, &daemon.on_removed),
        }
    }
}

/// Checks one hook's command; the error names the key.
pub fn check_argv(key: &'static str, argv: &Argv) -> Result<(), (&'static str, String)> {
    if argv.len() > MAX_ARGS {
        return Err((key, format!("{} arguments; at most {MAX_ARGS}", argv.len())));
    }
    if let Some(a) = argv.iter().find(|a| a.len() > MAX_ARG_BYTES || a.contains('\0')) {
        let shown: String = a.chars().take(40).collect();
        return Err((key, format!("argument `{shown}…` is over {MAX_ARG_BYTES} bytes or holds a NUL byte")));
    }
    if argv.first().is_some_and(|p| p.is_empty()) {
        return Err((key, "the program (first element) is empty".into()));
    }
    Ok(())
}

impl HooksConfig {
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        check_argv("hooks.on_complete", &self.on_complete)?;
        check_argv("hooks.on_error", &self.on_error)?;
        check_argv("hooks.on_removed", &self.on_removed)
    }
}

impl TorrentHooks {
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        for (key, argv) in [
            ("hooks.on_complete", &self.on_complete),
            ("hooks.on_error", &self.on_error),
            ("hooks.on_removed", &self.on_removed),
        ] {
            if let Some(argv) = argv {
                check_argv(key, argv)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torrent_replaces_only_the_events_it_names() {
        let daemon = HooksConfig {
            on_complete: vec!["/bin/a".into()],
            on_error: vec!["/bin/e".into()],
            ..HooksConfig::default()
        };
        let own = TorrentHooks { on_complete: Some(vec!["/bin/b".into()]), on_error: Some(vec![]), on_removed: None };
        let r = HookCommands::resolve(&daemon, &own);
        assert_eq!(r.on_complete, vec!["/bin/b".to_string()]);
        assert!(r.on_error.is_empty(), "[] turns the daemon's hook off for this torrent");
        assert!(r.on_removed.is_empty());
    }

    #[test]
    fn commands_are_bounded() {
        assert!(check_argv("k", &vec!["x".into(); MAX_ARGS + 1]).is_err());
        assert!(check_argv("k", &vec!["a".repeat(MAX_ARG_BYTES + 1)]).is_err());
        assert!(check_argv("k", &vec![String::new()]).is_err());
        assert!(check_argv("k", &vec!["/bin/true".into(), "x".into()]).is_ok());
    }
}
