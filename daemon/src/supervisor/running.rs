//! The running torrents: the one map of them, owned by the supervisor.
//!
//! Invariants: a torrent is published in [`DaemonShared`] (the read model `status` and `peers`
//! answer from) exactly while it is in this map — starting and stopping go through
//! [`Running::insert`] and [`Running::remove`], nothing else publishes or withdraws; each
//! running torrent has its content path here (for the one-path-one-torrent rule) and the name
//! of the file in `torrents/` that runs it (published by the task), so which file runs which torrent is
//! derived, never recorded twice.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::content::ContentPath;
use crate::descriptor::InfoHash;
use crate::shared::DaemonShared;
use crate::torrent::TorrentHandle;

struct Entry {
    handle: TorrentHandle,
    path: ContentPath,
}

pub(super) struct Running {
    torrents: BTreeMap<InfoHash, Entry>,
    shared: Arc<DaemonShared>,
}

impl Running {
    pub(super) fn new(shared: Arc<DaemonShared>) -> Running {
        Running { torrents: BTreeMap::new(), shared }
    }

    /// Adds a started torrent and publishes it.
    pub(super) fn insert(&mut self, handle: TorrentHandle, path: ContentPath) {
        let hash = handle.info_hash();
        self.shared.publish(handle.shared.clone());
        if let Some(old) = self.torrents.insert(hash, Entry { handle, path }) {
            // The supervisor stops a torrent before it starts it again; a second start would
            // leave the first task running unseen.
            debug_assert!(false, "{hash} started twice");
            log::error!("{hash}: started while running; the earlier task is dropped");
            drop(old);
        }
    }

    /// Withdraws a torrent and hands back its handle (to stop it).
    pub(super) fn remove(&mut self, hash: &InfoHash) -> Option<TorrentHandle> {
        let entry = self.torrents.remove(hash)?;
        self.shared.withdraw(hash);
        Some(entry.handle)
    }

    /// Withdraws every torrent (shutdown).
    pub(super) fn drain(&mut self) -> Vec<TorrentHandle> {
        let hashes: Vec<InfoHash> = self.torrents.keys().copied().collect();
        hashes.iter().filter_map(|h| self.remove(h)).collect()
    }

    pub(super) fn get(&self, hash: &InfoHash) -> Option<&TorrentHandle> {
        self.torrents.get(hash).map(|e| &e.handle)
    }

    /// Every running torrent.
    pub(super) fn handles(&self) -> impl Iterator<Item = &TorrentHandle> {
        self.torrents.values().map(|e| &e.handle)
    }

    pub(super) fn len(&self) -> usize {
        self.torrents.len()
    }

    /// The torrent the file `torrents/NAME` runs, if it runs one.
    pub(super) fn run_by(&self, file: &str) -> Option<InfoHash> {
        self.torrents.iter().find(|(_, e)| e.handle.file() == file).map(|(h, _)| *h)
    }

    /// Every running torrent's content path.
    pub(super) fn paths(&self) -> impl Iterator<Item = (&InfoHash, &ContentPath)> {
        self.torrents.iter().map(|(h, e)| (h, &e.path))
    }
}
