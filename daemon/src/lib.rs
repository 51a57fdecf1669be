//! p2pd — tracker-less peer-to-peer file distribution.
//!
//! The library behind the `p2pd` daemon; `p2pctl` links it (without the `daemon` feature) for
//! the formats the two share. See `ARCHITECTURE.md` at the repository root for the codemap.
//!
//! Shared with p2pctl:
//! - [`descriptor`]: `.desc` files — format, validation, info hash, creation from files;
//! - [`config`]: `p2pd.yaml`, `torrents/*.yaml` and default locations;
//! - [`control::protocol`]: requests and responses on the control socket;
//! - [`units`], [`yaml`]: sizes and rates; bounded YAML parsing.
//!
//! Module docs state their invariants by naming the private constants and helpers that keep
//! them; these docs are for p2pd's developers (`cargo doc --document-private-items`), so links
//! to private items are intended.

#![allow(rustdoc::private_intra_doc_links)]

pub mod config;
pub mod control;
pub mod descriptor;
pub mod units;
pub mod yaml;

#[cfg(feature = "daemon")]
pub mod state;
#[cfg(feature = "daemon")]
pub mod storage;
#[cfg(feature = "daemon")]
pub mod torrent;

pub mod bitfield;
#[cfg(feature = "daemon")]
pub mod deadline;
#[cfg(feature = "daemon")]
pub mod discovery;
#[cfg(feature = "daemon")]
pub mod hooks;
#[cfg(feature = "daemon")]
pub mod metrics;
#[cfg(feature = "daemon")]
pub mod node_id;
#[cfg(feature = "daemon")]
pub mod runtime;
#[cfg(feature = "daemon")]
pub mod service;
#[cfg(feature = "daemon")]
pub mod shared;
#[cfg(feature = "daemon")]
pub mod supervisor;
#[cfg(feature = "daemon")]
pub mod swarm;
#[cfg(feature = "daemon")]
pub mod tasks;
