//! The operator's configuration: `p2pd.yaml` and the `torrents/` directory beside it.
//!
//! [`Config`] is the one serde type for `p2pd.yaml`; every key is optional and its default is
//! here, in one place, and documented key by key in `config/p2pd.yaml`. Unknown keys are
//! errors that name the key and line. The daemon only ever reads the config directory's
//! `p2pd.yaml`; it never writes it. It writes `torrents/*.yaml` only for `p2pctl add` and
//! `p2pctl remove`.

pub mod bounds;
pub mod hooks;
pub mod locations;
pub mod retention;
pub mod torrent_entry;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::descriptor::NodeAddr;
use crate::units::{ByteRate, ByteSize};
use crate::yaml::{self, ReadError, YamlError, YamlLimits};

pub use locations::Locations;

/// File name of the main configuration inside the config directory.
pub const CONFIG_FILE: &str = "p2pd.yaml";
/// Directory (inside the config directory) holding one YAML file per torrent.
pub const TORRENTS_DIR: &str = "torrents";
/// Default UDP RPC and TCP peer port.
pub const DEFAULT_PORT: u16 = 6690;
/// Most entries of `data_roots`.
pub const MAX_DATA_ROOTS: usize = 64;

/// Log verbosity, lowest to highest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The level `steps` above this one (each `-v`), saturating at `trace`.
    pub fn raised(self, steps: u8) -> LogLevel {
        const ORDER: [LogLevel; 5] =
            [LogLevel::Error, LogLevel::Warn, LogLevel::Info, LogLevel::Debug, LogLevel::Trace];
        let index = ORDER.iter().position(|&l| l == self).unwrap_or(2);
        ORDER[(index + steps as usize).min(ORDER.len() - 1)]
    }

    pub fn to_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// `p2pd.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port of both the UDP RPC and the TCP peer listener.
    pub listen: SocketAddr,
    /// Nodes to join the network through at start-up, besides those named in descriptors.
    pub bootstrap: Vec<NodeAddr>,
    /// Node identity, progress and peer tables. Default: see [`Locations`].
    pub state_dir: Option<PathBuf>,
    /// Where added content goes unless `p2pctl add --data` says otherwise.
    pub data_dir: Option<PathBuf>,
    /// Directories inside which a client other than root may put content with `p2pctl add
    /// --data`. Default: `[data_dir]`.
    pub data_roots: Option<Vec<PathBuf>>,
    /// The control socket p2pctl talks to.
    pub control_socket: Option<PathBuf>,
    /// Members of this group may use the control socket (besides root and the daemon's user).
    pub control_group: Option<String>,
    /// `error`, `warn`, `info`, `debug` or `trace`; each `-v` raises it one step.
    pub log_level: LogLevel,
    /// Log to syslog even in the foreground (`--daemon` always logs to syslog).
    pub syslog: bool,
    /// The syslog socket; default: the system's (`/dev/log`).
    pub syslog_socket: Option<PathBuf>,
    /// Rate and connection limits.
    pub limits: Limits,
    /// Discovery protocol tunables.
    pub discovery: DiscoverySettings,
    /// Where `/metrics`, `/health` and `/ready` are served over HTTP; absent: not served.
    pub metrics_listen: Option<SocketAddr>,
    /// Programs run on torrents' events.
    pub hooks: hooks::HooksConfig,
    /// When cache torrents are deleted to keep their filesystems below a fill level.
    pub retention: retention::Retention,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            bootstrap: Vec::new(),
            state_dir: None,
            data_dir: None,
            data_roots: None,
            control_socket: None,
            control_group: None,
            log_level: LogLevel::Info,
            syslog: false,
            syslog_socket: None,
            limits: Limits::default(),
            discovery: DiscoverySettings::default(),
            metrics_listen: None,
            hooks: hooks::HooksConfig::default(),
            retention: retention::Retention::default(),
        }
    }
}

/// Transfer and connection limits (`limits:` in `p2pd.yaml`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Total download rate of all torrents.
    #[serde(deserialize_with = "bounds::byte_rate::<bounds::DownloadRate, _>")]
    pub download_rate: ByteRate,
    /// Total upload rate of all torrents.
    #[serde(deserialize_with = "bounds::byte_rate::<bounds::UploadRate, _>")]
    pub upload_rate: ByteRate,
    /// Most peer connections in total.
    #[serde(deserialize_with = "bounds::number::<bounds::MaxPeers, _, _>")]
    pub max_peers: u32,
    /// Most peer connections per torrent.
    #[serde(deserialize_with = "bounds::number::<bounds::MaxPeersPerTorrent, _, _>")]
    pub max_peers_per_torrent: u32,
    /// Torrents downloading at once, at most (0: no limit); the others wait, `queued`.
    #[serde(deserialize_with = "bounds::number::<bounds::MaxActiveDownloads, _, _>")]
    pub max_active_downloads: u32,
    /// Peers a torrent uploads to at the same time, at most (fewer while the measured upload
    /// rate cannot serve them all a piece within half a second; see the swarm engine).
    #[serde(deserialize_with = "bounds::number::<bounds::UploadSlots, _, _>")]
    pub upload_slots: u32,
    /// Most peer connections with one IP address (in and out, all torrents).
    #[serde(deserialize_with = "bounds::number::<bounds::MaxConnectionsPerIp, _, _>")]
    pub max_connections_per_ip: u32,
    /// Bytes of pieces requested from one peer and not yet received: caps the memory a
    /// download holds in piece buffers for one peer, independently of piece size.
    #[serde(deserialize_with = "bounds::byte_size::<bounds::MaxInFlightPerPeer, _>")]
    pub max_in_flight_per_peer: ByteSize,
    /// The same over all peers of one torrent.
    #[serde(deserialize_with = "bounds::byte_size::<bounds::MaxInFlightPerTorrent, _>")]
    pub max_in_flight_per_torrent: ByteSize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            download_rate: ByteRate::UNLIMITED,
            upload_rate: ByteRate::UNLIMITED,
            max_peers: 500,
            max_peers_per_torrent: 50,
            max_active_downloads: 0,
            upload_slots: 32,
            max_connections_per_ip: 32,
            max_in_flight_per_peer: ByteSize(64 << 20),
            max_in_flight_per_torrent: ByteSize(256 << 20),
        }
    }
}

/// Discovery tunables (`discovery:` in `p2pd.yaml`). Defaults suit a LAN or datacenter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoverySettings {
    /// Routing bucket size, and how many nodes closest to an info hash keep its swarm.
    #[serde(deserialize_with = "bounds::number::<bounds::K, _, _>")]
    pub k: u32,
    /// Most hops a get_peers request travels.
    #[serde(deserialize_with = "bounds::number::<bounds::HopLimit, _, _>")]
    pub hop_limit: u8,
    /// First timeout of a request, in milliseconds; doubled on each retry.
    #[serde(deserialize_with = "bounds::number::<bounds::RpcTimeoutMs, _, _>")]
    pub rpc_timeout_ms: u64,
    /// Sends of one request before its target counts as not answering (1 + retries).
    #[serde(deserialize_with = "bounds::number::<bounds::RpcAttempts, _, _>")]
    pub rpc_attempts: u32,
    /// A lookup gives up after this many seconds.
    #[serde(deserialize_with = "bounds::number::<bounds::LookupTimeoutSecs, _, _>")]
    pub lookup_timeout_secs: u64,
    /// Peer table entries expire unless refreshed within this many seconds.
    #[serde(deserialize_with = "bounds::number::<bounds::PeerTtlSecs, _, _>")]
    pub peer_ttl_secs: u64,
    /// Swarm members re-announce this often (seconds).
    #[serde(deserialize_with = "bounds::number::<bounds::AnnounceIntervalSecs, _, _>")]
    pub announce_interval_secs: u64,
    /// Most members kept per swarm.
    #[serde(deserialize_with = "bounds::number::<bounds::MaxPeersPerSwarm, _, _>")]
    pub max_peers_per_swarm: u32,
    /// Most swarms kept for others (as one of the nodes closest to their info hash).
    #[serde(deserialize_with = "bounds::number::<bounds::MaxStoredSwarms, _, _>")]
    pub max_stored_swarms: u32,
    /// Most routing-table entries (and entries per swarm) sharing one IP address.
    #[serde(deserialize_with = "bounds::number::<bounds::MaxNodesPerIp, _, _>")]
    pub max_nodes_per_ip: u32,
    /// Datagrams per second accepted from one source IP (bursts of twice that).
    #[serde(deserialize_with = "bounds::number::<bounds::RateLimit, _, _>")]
    pub rate_limit: u32,
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        DiscoverySettings {
            k: 8,
            hop_limit: 16,
            rpc_timeout_ms: 250,
            rpc_attempts: 4,
            lookup_timeout_secs: 30,
            peer_ttl_secs: 1800,
            announce_interval_secs: 600,
            max_peers_per_swarm: 512,
            max_stored_swarms: 4096,
            max_nodes_per_ip: 16,
            rate_limit: 500,
        }
    }
}

/// Why `p2pd.yaml` was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: ReadError },
    #[error("{}: {source}", path.display())]
    Yaml { path: PathBuf, source: YamlError },
    #[error("{}: {field}: {problem}", path.display())]
    Invalid { path: PathBuf, field: &'static str, problem: String },
}

impl Config {
    /// Reads `DIR/p2pd.yaml`; a missing file means all defaults.
    pub fn load(config_dir: &Path) -> Result<Config, ConfigError> {
        let path = config_dir.join(CONFIG_FILE);
        let text = match yaml::read_bounded(&path, YamlLimits::CONFIG.max_bytes) {
            Ok(text) => text,
            Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        Config::parse(&text).map_err(|e| match e {
            ParseError::Yaml(source) => ConfigError::Yaml { path, source },
            ParseError::Invalid { field, problem } => ConfigError::Invalid { path, field, problem },
        })
    }

    /// For clients: only the keys that locate a running daemon (`control_socket`, `state_dir`),
    /// ignoring every other key and any error in them. The daemon may be running on an older,
    /// valid version of a file that is now broken — which is exactly when an operator runs
    /// `p2pctl reload`. If even those keys cannot be read, the defaults are used.
    pub fn load_locating_keys(config_dir: &Path) -> Config {
        #[derive(Deserialize)]
        struct Locating {
            #[serde(default)]
            state_dir: Option<PathBuf>,
            #[serde(default)]
            control_socket: Option<PathBuf>,
        }
        let path = config_dir.join(CONFIG_FILE);
        let Ok(text) = yaml::read_bounded(&path, YamlLimits::CONFIG.max_bytes) else {
            return Config::default();
        };
        let (state_dir, control_socket) = match yaml::from_str::<Locating>(&text, YamlLimits::CONFIG) {
            Ok(l) => (l.state_dir, l.control_socket),
            // Not even YAML: look for the two keys as plain top-level `key: value` lines.
            Err(_) => (top_level_value(&text, "state_dir"), top_level_value(&text, "control_socket")),
        };
        Config { state_dir, control_socket, ..Config::default() }
    }

    /// Parses and checks the text of a `p2pd.yaml`. An empty document means all defaults.
    pub fn parse(text: &str) -> Result<Config, ParseError> {
        let meaningful = text.lines().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#') && t != "---" && t != "..."
        });
        let config: Config = if meaningful { yaml::from_str(text, YamlLimits::CONFIG)? } else { Config::default() };
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ParseError> {
        // Every number was checked against its bound (`bounds`) while it was read.
        let bad = |field, problem: &str| Err(ParseError::Invalid { field, problem: problem.to_string() });
        if self.bootstrap.len() > crate::descriptor::MAX_BOOTSTRAP {
            return bad("bootstrap", "too many addresses (at most 64)");
        }
        if let Some(roots) = &self.data_roots {
            if roots.len() > MAX_DATA_ROOTS {
                return bad("data_roots", "too many directories (at most 64)");
            }
            if roots.iter().any(|p| p.as_os_str().is_empty()) {
                return bad("data_roots", "must not contain an empty path");
            }
        }
        if let Some(group) = &self.control_group
            && (group.is_empty() || group.contains(['\0', ':', '\n']))
        {
            return bad("control_group", "is not a valid group name");
        }
        if let Err((field, problem)) = self.hooks.check() {
            return bad(field, &problem);
        }
        if let Err((field, problem)) = self.retention.check() {
            return bad(field, &problem);
        }
        for (field, path) in
            [("state_dir", &self.state_dir), ("data_dir", &self.data_dir), ("control_socket", &self.control_socket)]
        {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return bad(field, "must not be empty");
            }
        }
        Ok(())
    }
}

/// The value of a top-level `key: value` line (quotes and a trailing comment removed).
fn top_level_value(text: &str, key: &str) -> Option<PathBuf> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.trim_start().strip_prefix(':')?;
        let value = value.split(" #").next()?.trim().trim_matches(['"', '\'']);
        (!value.is_empty()).then(|| PathBuf::from(value))
    })
}

/// Why a config text was not accepted (without the file name).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ParseError {
    #[error("{0}")]
    Yaml(#[from] YamlError),
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `config/p2pd.yaml` documents every key with its default: it must parse to exactly the
    /// defaults, and name every key `Config` has.
    #[test]
    fn documented_defaults_are_the_defaults() {
        let text = include_str!("../../../config/p2pd.yaml");
        assert_eq!(Config::parse(text).unwrap(), Config::default());
        let serialized = serde_json::to_value(Config::default()).unwrap();
        let mut keys: Vec<String> = serialized.as_object().unwrap().keys().cloned().collect();
        keys.extend(serialized["limits"].as_object().unwrap().keys().cloned());
        keys.extend(serialized["discovery"].as_object().unwrap().keys().cloned());
        keys.extend(serialized["hooks"].as_object().unwrap().keys().cloned());
        keys.extend(serialized["retention"].as_object().unwrap().keys().cloned());
        for key in keys {
            assert!(text.contains(&format!("{key}:")), "config/p2pd.yaml does not document `{key}`");
        }
    }

    #[test]
    fn retention_values_are_checked_with_line_and_key() {
        let e = Config::parse("retention:\n  high_water: 150%\n").unwrap_err().to_string();
        assert!(e.starts_with("line 2, column ") && e.contains("`150%` is not a percentage from 1% to 100%"), "{e}");
        let e = Config::parse("retention:\n  min_seed_time: soon\n").unwrap_err().to_string();
        assert!(e.contains("`soon` is not a length of time"), "{e}");
        let e = Config::parse("retention:\n  high_water: 70%\n  low_water: 75%\n").unwrap_err().to_string();
        assert_eq!(e, "retention.low_water: 75% must be below retention.high_water (70%)");
        let c = Config::parse("retention:\n  high_water: 95\n  min_seed_time: 1h 30m\n").unwrap();
        assert_eq!((c.retention.high_water.0, c.retention.min_seed_time.0.as_secs()), (95, 5400));
    }

    #[test]
    fn empty_and_comment_only_files_mean_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert_eq!(Config::parse("# nothing here\n\n").unwrap(), Config::default());
    }

    #[test]
    fn keys_parse() {
        let c = Config::parse(
            "listen: \"[::]:7000\"\nlog_level: debug\nlimits:\n  upload_rate: 100Mbit\n  max_peers: 10\nbootstrap: [\"10.1.1.1:7000\"]\n",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 7000);
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(c.limits.upload_rate, ByteRate(Some(12_500_000)));
        assert_eq!(c.limits.max_peers, 10);
        assert_eq!(c.bootstrap.len(), 1);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Config::parse("listen: 0.0.0.0:1\nlisten_port: 5\n").unwrap_err().to_string();
        assert!(e.starts_with("line 2, column 1: unknown field `listen_port`"), "{e}");
        let e = Config::parse("limits:\n  upload: 5\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `upload`"), "{e}");
    }

    #[test]
    fn invalid_values_are_named() {
        let e = Config::parse("limits:\n  max_peers: 0\n").unwrap_err().to_string();
        assert_eq!(e, "line 2, column 14: limits.max_peers: 0 is below the minimum; allowed: 1 to 10000");
        let e = Config::parse("log_level: loud\n").unwrap_err().to_string();
        assert!(e.starts_with("line 1, column 12:"), "{e}");
    }

    /// `section.leaf: value` as a YAML document (the value on line 2).
    fn document(key: &str, value: &str) -> String {
        let (section, leaf) = key.split_once('.').unwrap();
        format!("{section}:\n  {leaf}: {value}\n")
    }

    /// Every bounded key: its maximum and minimum are accepted, one above the maximum and one
    /// below the minimum are refused with the line, the key and the range.
    #[test]
    fn every_bound_is_enforced_with_line_key_and_range() {
        for bound in bounds::CONFIG {
            let range = bound.range();
            for ok in [bound.min, bound.max] {
                Config::parse(&document(bound.key, &ok.to_string()))
                    .unwrap_or_else(|e| panic!("{}: {ok}: {e}", bound.key));
            }
            let above = (bound.max as u128 + 1).to_string();
            let e = Config::parse(&document(bound.key, &above)).unwrap_err().to_string();
            assert!(e.starts_with("line 2, column "), "{}: {e}", bound.key);
            assert!(
                e.ends_with(&format!(
                    "{}: {} is above the maximum; allowed: {range}",
                    bound.key,
                    bound_shown(bound, &above)
                )),
                "{e}"
            );
            let huge = Config::parse(&document(bound.key, "184467440737095516150000")).unwrap_err().to_string();
            assert!(huge.starts_with("line 2") && huge.contains("above the maximum"), "{}: {huge}", bound.key);
            if bound.min > 0 {
                let below = (bound.min - 1).to_string();
                let e = Config::parse(&document(bound.key, &below)).unwrap_err().to_string();
                assert!(e.starts_with("line 2") && e.contains("below the minimum") && e.contains(&range), "{e}");
            }
            let e = Config::parse(&document(bound.key, "-5")).unwrap_err().to_string();
            assert!(e.starts_with("line 2") && e.contains(bound.key), "{}: {e}", bound.key);
        }
    }

    fn bound_shown(bound: &bounds::Bound, value: &str) -> String {
        match bound.unit {
            bounds::Unit::Bytes => {
                let v: u64 = value.parse().unwrap();
                format!("{v} ({})", crate::units::human_bytes(v))
            }
            bounds::Unit::Rate => format!("{value} B/s"),
            _ => value.to_string(),
        }
    }

    /// No number in `p2pd.yaml` escapes the bound tables.
    #[test]
    fn every_number_has_a_bound() {
        let serialized = serde_json::to_value(Config::default()).unwrap();
        let mut numbers = Vec::new();
        for (key, value) in serialized.as_object().unwrap() {
            match value {
                serde_json::Value::Number(_) => numbers.push(key.clone()),
                serde_json::Value::Object(section) => numbers
                    .extend(section.iter().filter(|(_, v)| v.is_number()).map(|(leaf, _)| format!("{key}.{leaf}"))),
                _ => {}
            }
        }
        let bounded: Vec<&str> = bounds::CONFIG.iter().map(|b| b.key).collect();
        for key in &numbers {
            assert!(bounded.contains(&key.as_str()), "{key} has no bound in config/bounds.rs");
        }
        assert_eq!(numbers.len(), bounded.len(), "{numbers:?} vs {bounded:?}");
    }

    /// `config/p2pd.yaml` states each key's range on the key's line, exactly as errors do.
    #[test]
    fn every_bound_is_documented_beside_its_key() {
        let text = include_str!("../../../config/p2pd.yaml");
        for bound in bounds::CONFIG {
            let leaf = bound.key.rsplit('.').next().unwrap();
            let line = text
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("{leaf}:")))
                .unwrap_or_else(|| panic!("config/p2pd.yaml has no line for {}", bound.key));
            assert!(
                line.contains(&format!("# {}", bound.range())),
                "{}: `{line}` lacks `# {}`",
                bound.key,
                bound.range()
            );
        }
        for bound in bounds::TORRENT {
            assert!(
                text.contains(&format!("#   {}: {}", bound.key, bound.range())),
                "config/p2pd.yaml does not document torrents/*.yaml `{}`",
                bound.key
            );
        }
    }

    #[test]
    fn out_of_range_values_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "log_level: info\ndiscovery:\n  peer_ttl_secs: 99999999999\n")
            .unwrap();
        let e = Config::load(dir.path()).unwrap_err().to_string();
        let expected = format!(
            "{}: line 3, column 18: discovery.peer_ttl_secs: 99999999999 is above the maximum; allowed: 10 to 604800 seconds",
            dir.path().join(CONFIG_FILE).display()
        );
        assert_eq!(e, expected);
    }

    #[test]
    fn in_flight_limits_parse_with_units() {
        let c = Config::parse("limits:\n  max_in_flight_per_peer: 1MiB\n  max_in_flight_per_torrent: 1G\n").unwrap();
        assert_eq!(c.limits.max_in_flight_per_peer, ByteSize(1 << 20));
        assert_eq!(c.limits.max_in_flight_per_torrent, ByteSize(1 << 30));
        assert_eq!(Config::default().limits.max_in_flight_per_peer, ByteSize(64 << 20));
        assert_eq!(Config::default().limits.max_in_flight_per_torrent, ByteSize(256 << 20));
        let e = Config::parse("limits:\n  max_in_flight_per_torrent: 32MiB\n").unwrap_err().to_string();
        assert!(e.contains("below the minimum; allowed: 64 MiB to 16 GiB"), "{e}");
    }

    #[test]
    fn data_roots_are_checked() {
        let c = Config::parse("data_roots: [/srv/a, /srv/b]\n").unwrap();
        assert_eq!(c.data_roots, Some(vec![PathBuf::from("/srv/a"), PathBuf::from("/srv/b")]));
        let many = format!("data_roots: [{}]\n", vec!["/x"; 65].join(", "));
        assert!(Config::parse(&many).unwrap_err().to_string().starts_with("data_roots: too many"));
    }

    #[test]
    fn clients_locate_the_socket_in_a_broken_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), "control_socket: /x/s.sock\nbogus: [1, 2\nlimits: 7\n").unwrap();
        assert!(Config::load(dir.path()).is_err());
        let c = Config::load_locating_keys(dir.path());
        assert_eq!(c.control_socket, Some(PathBuf::from("/x/s.sock")));
    }

    #[test]
    fn levels_raise() {
        assert_eq!(LogLevel::Info.raised(1), LogLevel::Debug);
        assert_eq!(LogLevel::Info.raised(9), LogLevel::Trace);
    }
}
