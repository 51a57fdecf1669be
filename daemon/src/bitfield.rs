//! A fixed-length set of piece indices, one bit per piece (most significant bit first).
//!
//! Used for the verified-piece set of a torrent (persisted in its resume state) and for the
//! have-bitmaps peers exchange. The byte form is exactly `ceil(len / 8)` bytes with unused
//! trailing bits zero; [`Bitfield::from_bytes`] rejects anything else.

use std::fmt;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Bitfield {
    bytes: Vec<u8>,
    len: usize,
    ones: usize,
}

/// Bytes that are not a bitfield of the expected length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitfieldError {
    #[error("bitfield has {found} bytes, {expected} expected")]
    Length { expected: usize, found: usize },
    #[error("bitfield has bits set beyond its last piece")]
    TrailingBits,
    #[error("bitfield is not valid hex")]
    Hex,
}

impl Bitfield {
    /// All clear.
    pub fn new(len: usize) -> Bitfield {
        Bitfield { bytes: vec![0; len.div_ceil(8)], len, ones: 0 }
    }

    /// All set.
    pub fn full(len: usize) -> Bitfield {
        let mut b = Bitfield::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    pub fn from_bytes(bytes: &[u8], len: usize) -> Result<Bitfield, BitfieldError> {
        let expected = len.div_ceil(8);
        if bytes.len() != expected {
            return Err(BitfieldError::Length { expected, found: bytes.len() });
        }
        if !len.is_multiple_of(8) && bytes[expected - 1] & (0xff >> (len % 8)) != 0 {
            return Err(BitfieldError::TrailingBits);
        }
        let ones = bytes.iter().map(|b| b.count_ones() as usize).sum();
        Ok(Bitfield { bytes: bytes.to_vec(), len, ones })
    }

    pub fn from_hex(hex_text: &str, len: usize) -> Result<Bitfield, BitfieldError> {
        let bytes = hex::decode(hex_text).map_err(|_| BitfieldError::Hex)?;
        Bitfield::from_bytes(&bytes, len)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn to_hex(&self) -> String {
        hex::encode(&self.bytes)
    }

    /// Number of indices (pieces).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of set bits.
    pub fn count(&self) -> usize {
        self.ones
    }

    pub fn is_complete(&self) -> bool {
        self.ones == self.len
    }

    /// Whether `i` is set; out-of-range indices are not.
    pub fn get(&self, i: usize) -> bool {
        i < self.len && self.bytes[i / 8] & (0x80 >> (i % 8)) != 0
    }

    /// Sets `i`; returns whether it was newly set. Out-of-range indices are ignored.
    pub fn set(&mut self, i: usize) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.bytes[i / 8] |= 0x80 >> (i % 8);
        self.ones += 1;
        true
    }

    /// Clears `i`; returns whether it was set.
    pub fn clear(&mut self, i: usize) -> bool {
        if !self.get(i) {
            return false;
        }
        self.bytes[i / 8] &= !(0x80 >> (i % 8));
        self.ones -= 1;
        true
    }

    /// Set indices in order.
    pub fn ones(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len).filter(|&i| self.get(i))
    }

    /// Clear indices in order.
    pub fn zeros(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len).filter(|&i| !self.get(i))
    }
}

impl fmt::Debug for Bitfield {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bitfield({}/{})", self.ones, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_clear_count() {
        let mut b = Bitfield::new(10);
        assert!(b.set(0) && b.set(9) && !b.set(9) && !b.set(10));
        assert_eq!(b.count(), 2);
        assert_eq!(b.as_bytes(), &[0x80, 0x40]);
        assert!(b.clear(0));
        assert_eq!(b.ones().collect::<Vec<_>>(), vec![9]);
        assert!(Bitfield::full(10).is_complete());
    }

    #[test]
    fn bytes_are_checked() {
        assert_eq!(Bitfield::from_bytes(&[0xff], 10), Err(BitfieldError::Length { expected: 2, found: 1 }));
        assert_eq!(Bitfield::from_bytes(&[0xff, 0xff], 10), Err(BitfieldError::TrailingBits));
        let b = Bitfield::from_bytes(&[0xff, 0xc0], 10).unwrap();
        assert!(b.is_complete());
        assert_eq!(Bitfield::from_hex(&b.to_hex(), 10).unwrap(), b);
    }
}
