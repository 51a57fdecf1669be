//! `torrents/*.yaml`: one file per torrent, its descriptor plus local settings.
//!
//! `p2pctl add` writes `torrents/<info hash>.yaml`; operators may also drop files there by hand
//! (any name ending in `.yaml`) and reload. The daemon manages exactly the torrents these
//! files describe.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::bounds;
use super::hooks::TorrentHooks;
use crate::descriptor::{DESCRIPTOR_YAML_LIMITS, Descriptor, DescriptorDocument, DescriptorError, InfoHash};
use crate::units::ByteRate;
use crate::yaml::{self, YamlError};

/// Local settings of one torrent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TorrentSettings {
    /// Where the content lives; default: the daemon's `data_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// A paused torrent keeps its data and state but neither downloads nor uploads.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// This torrent's download limit (within the global one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub download_rate: Option<ByteRate>,
    /// This torrent's upload limit (within the global one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_rate: Option<ByteRate>,
    /// Most peer connections for this torrent (within the global limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_peers: Option<u32>,
    /// This torrent's own hooks, replacing the daemon's for the events named.
    #[serde(default, skip_serializing_if = "TorrentHooks::is_empty")]
    pub hooks: TorrentHooks,
    /// Its place in the download queue: lower goes first (`p2pctl add` writes the time it was
    /// added, in milliseconds since 1970; absent: after every torrent that has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<u64>,
    /// A cache torrent may be deleted, data and file, to keep its filesystem below the
    /// `retention:` high-water mark (`p2pctl add --cache`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cache: bool,
}

/// The YAML shape of a torrent file: the settings' keys, then `descriptor:`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorrentEntryDocument {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounds::optional_byte_rate::<bounds::TorrentDownloadRate, _>"
    )]
    pub download_rate: Option<ByteRate>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounds::optional_byte_rate::<bounds::TorrentUploadRate, _>"
    )]
    pub upload_rate: Option<ByteRate>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "bounds::optional_number::<bounds::TorrentMaxPeers, _, _>"
    )]
    pub max_peers: Option<u32>,
    #[serde(default, skip_serializing_if = "TorrentHooks::is_empty")]
    pub hooks: TorrentHooks,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cache: bool,
    pub descriptor: DescriptorDocument,
}

/// A validated torrent file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TorrentEntry {
    pub settings: TorrentSettings,
    pub descriptor: Descriptor,
}

/// Why a torrent file was not accepted.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TorrentEntryError {
    #[error("{0}")]
    Yaml(#[from] YamlError),
    #[error("descriptor.{0}")]
    Descriptor(DescriptorError),
    #[error("{field}: {problem}")]
    Invalid { field: &'static str, problem: String },
}

impl TorrentEntry {
    /// Parses and validates the text of a torrent file.
    pub fn parse(text: &str) -> Result<TorrentEntry, TorrentEntryError> {
        let document: TorrentEntryDocument = yaml::from_str(text, DESCRIPTOR_YAML_LIMITS)?;
        let descriptor = Descriptor::from_document(&document.descriptor).map_err(|e| match e {
            DescriptorError::Yaml(y) => TorrentEntryError::Yaml(y),
            other => TorrentEntryError::Descriptor(other),
        })?;
        let settings = TorrentSettings {
            data_dir: document.data_dir,
            paused: document.paused,
            download_rate: document.download_rate,
            upload_rate: document.upload_rate,
            max_peers: document.max_peers,
            hooks: document.hooks,
            queue: document.queue,
            cache: document.cache,
        };
        if let Err((field, problem)) = settings.hooks.check() {
            return Err(TorrentEntryError::Invalid { field, problem });
        }
        if let Some(dir) = &settings.data_dir
            && !dir.is_absolute()
        {
            return Err(TorrentEntryError::Invalid {
                field: "data_dir",
                problem: format!("`{}` must be an absolute path", dir.display()),
            });
        }
        Ok(TorrentEntry { settings, descriptor })
    }

    pub fn info_hash(&self) -> InfoHash {
        self.descriptor.info_hash
    }

    /// The file text, with a header comment.
    pub fn to_yaml(&self) -> String {
        let s = self.settings.clone();
        let document = TorrentEntryDocument {
            data_dir: s.data_dir,
            paused: s.paused,
            download_rate: s.download_rate,
            upload_rate: s.upload_rate,
            max_peers: s.max_peers,
            hooks: s.hooks,
            queue: s.queue,
            cache: s.cache,
            descriptor: self.descriptor.to_document(),
        };
        let body = serde_saphyr::to_string(&document)
            .unwrap_or_else(|e| unreachable!("torrent entries always serialize: {e}"));
        format!(
            "# p2pd torrent: {} ({})\n# Written by `p2pctl add`. Settings may be edited; apply with `p2pctl reload`.\n{body}",
            self.descriptor.content.name, self.descriptor.info_hash
        )
    }

    /// The file name `p2pctl add` uses for this torrent.
    pub fn file_name(&self) -> String {
        format!("{}.yaml", self.descriptor.info_hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A torrent file as `p2pctl add` wrote it with format version 1 still parses.
    #[test]
    fn a_torrent_file_of_format_version_1_parses() {
        let (_dir, path) = crate::state::fixture("torrent.yaml");
        let e = TorrentEntry::parse(&std::fs::read_to_string(path).unwrap()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.descriptor.info_hash.to_hex(), crate::state::FIXTURE_HASH);
        assert_eq!(e.settings.data_dir.as_deref(), Some(std::path::Path::new("/tmp/fx/b/data")));
        assert_eq!(e.descriptor.content.pieces.len(), 7);
    }
    use crate::descriptor::create::PieceHasher;
    use crate::descriptor::{Content, ContentKind, FileEntry, RelPath};

    fn entry() -> TorrentEntry {
        let mut h = PieceHasher::new(16 << 10);
        h.update(&[1u8; 20_000]);
        let content = Content {
            kind: ContentKind::File,
            name: "f.bin".into(),
            piece_length: 16 << 10,
            files: vec![FileEntry::new(RelPath::root(), 20_000)],
            empty_dirs: Vec::new(),
            pieces: h.finish(),
            total_length: 20_000,
        };
        TorrentEntry {
            settings: TorrentSettings {
                data_dir: Some("/srv/data".into()),
                upload_rate: Some(ByteRate(Some(1000))),
                cache: true,
                ..Default::default()
            },
            descriptor: Descriptor { info_hash: content.info_hash(), content, bootstrap: vec![] },
        }
    }

    #[test]
    fn round_trip() {
        let e = entry();
        assert_eq!(TorrentEntry::parse(&e.to_yaml()).unwrap(), e);
    }

    #[test]
    fn unknown_setting_is_named() {
        let text = entry().to_yaml().replace("data_dir:", "bogus_key: 1\ndata_dir:");
        let err = TorrentEntry::parse(&text).unwrap_err().to_string();
        assert!(err.contains("bogus_key"), "{err}");
    }

    #[test]
    fn every_setting_bound_is_enforced_with_line_key_and_range() {
        let mut plain = entry();
        plain.settings.upload_rate = None;
        let base = plain.to_yaml();
        let line = base.lines().position(|l| l.starts_with("data_dir:")).unwrap() + 1;
        for bound in bounds::TORRENT {
            let with = |value: &str| base.replacen("data_dir:", &format!("{}: {value}\ndata_dir:", bound.key), 1);
            let parsed = TorrentEntry::parse(&with(&bound.max.to_string())).unwrap();
            assert!(parsed.settings != plain.settings, "{} was read", bound.key);
            let e = TorrentEntry::parse(&with(&(bound.max + 1).to_string())).unwrap_err().to_string();
            assert!(e.starts_with(&format!("line {line}, column ")), "{}: {e}", bound.key);
            assert!(e.contains(&format!("{}: ", bound.key)) && e.contains("is above the maximum"), "{e}");
            assert!(e.ends_with(&format!("allowed: {}", bound.range())), "{e}");
            let e = TorrentEntry::parse(&with(&(bound.min - 1).to_string())).unwrap_err().to_string();
            assert!(e.contains("below the minimum"), "{}: {e}", bound.key);
        }
        // null means "not set", as an absent key does.
        let e = TorrentEntry::parse(&base.replacen("data_dir:", "max_peers: null\ndata_dir:", 1)).unwrap();
        assert_eq!(e.settings.max_peers, None);
    }

    #[test]
    fn descriptor_errors_are_prefixed() {
        let text = entry().to_yaml().replace("piece_length: 16384", "piece_length: 0");
        let err = TorrentEntry::parse(&text).unwrap_err().to_string();
        assert_eq!(err, "descriptor.content.piece_length: must not be zero");
    }
}
