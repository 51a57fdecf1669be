//! Where the config, state, data and control socket live when the config does not say.
//!
//! Resolution, first match wins:
//! 1. the key in `p2pd.yaml` (relative paths are relative to the config directory);
//! 2. the directories systemd hands a service (`CONFIGURATION_DIRECTORY`, `STATE_DIRECTORY`,
//!    `RUNTIME_DIRECTORY`), so the unit needs no flags;
//! 3. as root: `/etc/p2pd`, `/var/lib/p2pd`, `/var/lib/p2pd/data`, `/run/p2pd/control.sock`;
//! 4. as any other user, the XDG base directories: `$XDG_CONFIG_HOME/p2pd`,
//!    `$XDG_STATE_HOME/p2pd`, `$XDG_DATA_HOME/p2pd`, `$XDG_RUNTIME_DIR/p2pd/control.sock`.
//!
//! p2pctl resolves the socket the same way, so `p2pctl status` finds the daemon that the same
//! user (or root) started with the same config directory. An operator who is not root and has
//! no daemon of their own reaches the system daemon at `/run/p2pd/control.sock`.

use std::path::{Path, PathBuf};

use super::Config;

/// The system-wide locations used when running as root.
pub const SYSTEM_CONFIG_DIR: &str = "/etc/p2pd";
pub const SYSTEM_STATE_DIR: &str = "/var/lib/p2pd";
pub const SYSTEM_SOCKET: &str = "/run/p2pd/control.sock";

/// Resolved locations of everything the daemon reads or writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locations {
    pub config_dir: PathBuf,
    pub state_dir: PathBuf,
    pub data_dir: PathBuf,
    /// Where clients other than root may put content (`data_roots`, default `[data_dir]`),
    /// absolute and normalized; symbolic links in them are resolved when a path is checked.
    pub data_roots: Vec<PathBuf>,
    pub control_socket: PathBuf,
}

/// The environment that decides defaults; captured once so resolution is a pure function.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    pub is_root: bool,
    pub home: Option<PathBuf>,
    pub xdg_config_home: Option<PathBuf>,
    pub xdg_state_home: Option<PathBuf>,
    pub xdg_data_home: Option<PathBuf>,
    pub xdg_runtime_dir: Option<PathBuf>,
    pub systemd_configuration_directory: Option<PathBuf>,
    pub systemd_state_directory: Option<PathBuf>,
    pub systemd_runtime_directory: Option<PathBuf>,
}

fn env_path(name: &str) -> Option<PathBuf> {
    // systemd passes colon-separated lists when a unit names several directories; ours is first.
    let value = std::env::var_os(name)?;
    let text = value.to_str()?.split(':').next()?.to_string();
    let path = PathBuf::from(text);
    path.is_absolute().then_some(path)
}

impl Environment {
    /// Reads the real process environment.
    pub fn current() -> Environment {
        Environment {
            is_root: nix::unistd::geteuid().is_root(),
            home: env_path("HOME"),
            xdg_config_home: env_path("XDG_CONFIG_HOME"),
            xdg_state_home: env_path("XDG_STATE_HOME"),
            xdg_data_home: env_path("XDG_DATA_HOME"),
            xdg_runtime_dir: env_path("XDG_RUNTIME_DIR"),
            systemd_configuration_directory: env_path("CONFIGURATION_DIRECTORY"),
            systemd_state_directory: env_path("STATE_DIRECTORY"),
            systemd_runtime_directory: env_path("RUNTIME_DIRECTORY"),
        }
    }

    fn home_join(&self, rel: &str) -> PathBuf {
        self.home.clone().unwrap_or_else(|| PathBuf::from("/tmp")).join(rel)
    }

    /// The config directory used when `--config-dir` is not given.
    pub fn default_config_dir(&self) -> PathBuf {
        if let Some(d) = &self.systemd_configuration_directory {
            return d.clone();
        }
        if self.is_root {
            return PathBuf::from(SYSTEM_CONFIG_DIR);
        }
        self.xdg_config_home.clone().unwrap_or_else(|| self.home_join(".config")).join("p2pd")
    }

    fn default_state_dir(&self) -> PathBuf {
        if let Some(d) = &self.systemd_state_directory {
            return d.clone();
        }
        if self.is_root {
            return PathBuf::from(SYSTEM_STATE_DIR);
        }
        self.xdg_state_home.clone().unwrap_or_else(|| self.home_join(".local/state")).join("p2pd")
    }

    fn default_data_dir(&self, state_dir: &Path) -> PathBuf {
        if self.is_root || self.systemd_state_directory.is_some() {
            return state_dir.join("data");
        }
        self.xdg_data_home.clone().unwrap_or_else(|| self.home_join(".local/share")).join("p2pd")
    }

    fn default_socket(&self, state_dir: &Path) -> PathBuf {
        if let Some(d) = &self.systemd_runtime_directory {
            return d.join("control.sock");
        }
        if self.is_root {
            return PathBuf::from(SYSTEM_SOCKET);
        }
        match &self.xdg_runtime_dir {
            Some(d) => d.join("p2pd").join("control.sock"),
            None => state_dir.join("control.sock"),
        }
    }
}

/// Makes `path` absolute (against the working directory) and removes `.` and `..`
/// components lexically, so messages show `/srv/p2pd/data`, not `/srv/p2pd/cfg/../data`.
pub fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// `path` (absolute) as the kernel will reach it: symbolic links and `..` resolved in the part
/// that exists (canonicalized), `.` and `..` removed lexically from the part that does not (it
/// holds no links yet). Used to compare where content goes, and to check it against
/// `data_roots`: `/srv/data/link/x` with `link → /etc` is `/etc/x`.
pub fn resolve(path: &Path) -> std::io::Result<PathBuf> {
    use std::path::Component;
    if !path.is_absolute() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not an absolute path", path.display()),
        ));
    }
    let components: Vec<Component> = path.components().collect();
    for existing in (1..=components.len()).rev() {
        let prefix: PathBuf = components[..existing].iter().collect();
        match std::fs::canonicalize(&prefix) {
            Ok(mut resolved) => {
                for c in &components[existing..] {
                    match c {
                        Component::ParentDir => {
                            resolved.pop();
                        }
                        Component::Normal(name) => resolved.push(name),
                        Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
                    }
                }
                return Ok(resolved);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(normalize(path))
}

impl Locations {
    /// Resolves every location for `config` loaded from `config_dir`.
    pub fn resolve(config_dir: &Path, config: &Config, env: &Environment) -> Locations {
        let config_dir = &normalize(config_dir);
        let relative_to_config = |p: &PathBuf| normalize(&if p.is_absolute() { p.clone() } else { config_dir.join(p) });
        let state_dir = config.state_dir.as_ref().map(relative_to_config).unwrap_or_else(|| env.default_state_dir());
        let data_dir =
            config.data_dir.as_ref().map(relative_to_config).unwrap_or_else(|| env.default_data_dir(&state_dir));
        let control_socket =
            config.control_socket.as_ref().map(relative_to_config).unwrap_or_else(|| env.default_socket(&state_dir));
        let data_roots = match &config.data_roots {
            Some(roots) => roots.iter().map(relative_to_config).collect(),
            None => vec![data_dir.clone()],
        };
        Locations { config_dir: config_dir.to_path_buf(), state_dir, data_dir, data_roots, control_socket }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_defaults() {
        let env = Environment { is_root: true, ..Default::default() };
        let dir = env.default_config_dir();
        let l = Locations::resolve(&dir, &Config::default(), &env);
        assert_eq!(l.config_dir, PathBuf::from("/etc/p2pd"));
        assert_eq!(l.state_dir, PathBuf::from("/var/lib/p2pd"));
        assert_eq!(l.data_dir, PathBuf::from("/var/lib/p2pd/data"));
        assert_eq!(l.control_socket, PathBuf::from("/run/p2pd/control.sock"));
    }

    #[test]
    fn user_defaults_follow_xdg() {
        let env = Environment {
            home: Some("/home/u".into()),
            xdg_runtime_dir: Some("/run/user/1000".into()),
            ..Default::default()
        };
        let dir = env.default_config_dir();
        let l = Locations::resolve(&dir, &Config::default(), &env);
        assert_eq!(l.config_dir, PathBuf::from("/home/u/.config/p2pd"));
        assert_eq!(l.state_dir, PathBuf::from("/home/u/.local/state/p2pd"));
        assert_eq!(l.data_dir, PathBuf::from("/home/u/.local/share/p2pd"));
        assert_eq!(l.control_socket, PathBuf::from("/run/user/1000/p2pd/control.sock"));
    }

    #[test]
    fn systemd_directories_win_over_user_defaults() {
        let env = Environment {
            home: Some("/nonexistent".into()),
            systemd_configuration_directory: Some("/etc/p2pd".into()),
            systemd_state_directory: Some("/var/lib/p2pd".into()),
            systemd_runtime_directory: Some("/run/p2pd".into()),
            ..Default::default()
        };
        let l = Locations::resolve(&env.default_config_dir(), &Config::default(), &env);
        assert_eq!(l.state_dir, PathBuf::from("/var/lib/p2pd"));
        assert_eq!(l.data_dir, PathBuf::from("/var/lib/p2pd/data"));
        assert_eq!(l.control_socket, PathBuf::from("/run/p2pd/control.sock"));
    }

    #[test]
    fn paths_are_normalized() {
        assert_eq!(normalize(Path::new("/a/b/../c/./d")), PathBuf::from("/a/c/d"));
        let config = Config { state_dir: Some("../state".into()), ..Default::default() };
        let l = Locations::resolve(Path::new("/srv/p2pd/cfg"), &config, &Environment::default());
        assert_eq!(l.state_dir, PathBuf::from("/srv/p2pd/state"));
    }

    #[test]
    fn resolve_follows_links_where_they_exist() {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(base.join("data")).unwrap();
        std::os::unix::fs::symlink("/etc", base.join("data/link")).unwrap();
        assert_eq!(resolve(&base.join("data/new/sub")).unwrap(), base.join("data/new/sub"));
        assert_eq!(resolve(&base.join("data/link/x")).unwrap(), PathBuf::from("/etc/x"));
        assert_eq!(resolve(&base.join("data/link/../y")).unwrap(), PathBuf::from("/y"));
        assert_eq!(resolve(&base.join("data/new/../../etc")).unwrap(), base.join("etc"));
        assert_eq!(resolve(&base.join("data/./z")).unwrap(), base.join("data/z"));
        assert!(resolve(Path::new("relative")).is_err());
    }

    #[test]
    fn config_keys_win_and_relative_paths_follow_the_config_dir() {
        let config =
            Config { state_dir: Some("state".into()), data_dir: Some("/srv/data".into()), ..Default::default() };
        let l = Locations::resolve(Path::new("/cfg"), &config, &Environment::default());
        assert_eq!(l.state_dir, PathBuf::from("/cfg/state"));
        assert_eq!(l.data_dir, PathBuf::from("/srv/data"));
        assert_eq!(l.data_roots, vec![PathBuf::from("/srv/data")], "data_roots default to data_dir");
        let config = Config { data_roots: Some(vec!["/srv/a".into(), "b".into()]), ..Default::default() };
        let l = Locations::resolve(Path::new("/cfg"), &config, &Environment::default());
        assert_eq!(l.data_roots, vec![PathBuf::from("/srv/a"), PathBuf::from("/cfg/b")]);
    }
}
