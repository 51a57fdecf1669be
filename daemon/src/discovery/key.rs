//! The keyspace node ids and info hashes share: 256-bit keys compared by XOR distance.

use crate::descriptor::InfoHash;
use crate::node_id::NodeId;

/// A point in the keyspace.
pub type Key = [u8; 32];

pub fn key_of_node(id: &NodeId) -> Key {
    id.0
}

pub fn key_of_hash(hash: &InfoHash) -> Key {
    hash.0
}

/// XOR distance; compares as a big-endian number.
pub fn distance(a: &Key, b: &Key) -> Key {
    let mut d = [0u8; 32];
    for i in 0..32 {
        d[i] = a[i] ^ b[i];
    }
    d
}

/// Number of leading bits `a` and `b` share (256 when equal).
pub fn common_prefix_len(a: &Key, b: &Key) -> usize {
    for i in 0..32 {
        let x = a[i] ^ b[i];
        if x != 0 {
            return i * 8 + x.leading_zeros() as usize;
        }
    }
    256
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_and_distance() {
        let a = [0u8; 32];
        let mut b = [0u8; 32];
        b[1] = 0b0010_0000;
        assert_eq!(common_prefix_len(&a, &b), 10);
        assert_eq!(common_prefix_len(&a, &a), 256);
        assert!(distance(&a, &b) > distance(&a, &a));
    }
}
