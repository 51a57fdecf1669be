//! The node's identity: a random 256-bit id in the same keyspace as info hashes.
//!
//! Generated once and kept in `STATE_DIR/node.state`, so a restarted node is the same node
//! to its neighbours. An unreadable identity file is quarantined and a new id generated.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::descriptor::InfoHash;
use crate::state::{Loaded, StateDir, StateKind};

/// A node id: 32 bytes, compared with info hashes by XOR distance.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(#[serde(with = "hex_bytes")] pub [u8; 32]);

impl NodeId {
    pub fn random() -> NodeId {
        NodeId(rand::random())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The id as a point of the keyspace info hashes live in.
    pub fn key(&self) -> [u8; 32] {
        self.0
    }
}

impl From<InfoHash> for NodeId {
    fn from(h: InfoHash) -> NodeId {
        NodeId(h.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({}…)", &self.to_hex()[..12])
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&text, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Identity {
    node_id: NodeId,
}

/// Loads the node id, creating (and saving) one on first start. The second value is a warning
/// line when an unreadable identity file had to be replaced.
pub fn load_or_create(state: &StateDir) -> std::io::Result<(NodeId, Option<String>)> {
    let (id, warning) = match state.load::<Identity>(StateKind::Node, None) {
        Loaded::Ok(identity) => return Ok((identity.node_id, None)),
        Loaded::Missing => (NodeId::random(), None),
        Loaded::Quarantined { moved_to, reason } => (
            NodeId::random(),
            Some(format!(
                "node identity unreadable ({reason}); moved to {}; this node has a new id",
                moved_to.display()
            )),
        ),
    };
    state.save(StateKind::Node, None, &Identity { node_id: id })?;
    Ok((id, warning))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The identity file of format version 1 loads as the same node id, without a warning.
    #[test]
    fn an_identity_of_format_version_1_keeps_its_id() {
        let (dir, _) = crate::state::fixture("node.state");
        let state = StateDir::open(dir.path()).unwrap();
        let (id, warning) = load_or_create(&state).unwrap();
        assert_eq!(id.to_hex(), "77af4f672096cbf27dafc90caa2174a518946320d50328727265f4b4c7321571");
        assert_eq!(warning, None);
    }
}
