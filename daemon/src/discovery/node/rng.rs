//! The node's random generator, which a clone of the node forks.
//!
//! Token secrets come from it, so it is a CSPRNG, and `rand` deliberately does not make those
//! `Clone`: copying the state would give two nodes the same secrets and the same request ids.
//! Cloning a [`NodeRng`] instead seeds a new generator from this one's output (advancing this
//! one), so that a cloned node — the simulation runs several scenarios on copies of one network
//! — draws its own stream, and [`super::Node`] can derive `Clone` rather than copy its fields
//! by hand.
//!
//! Invariant: the cell is only borrowed inside `clone` (drawing uses `get_mut`, which needs
//! `&mut self` and so cannot overlap a clone), so the borrow can never fail.

use std::cell::RefCell;
use std::convert::Infallible;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng, TryCryptoRng, TryRng};

#[derive(Debug)]
pub struct NodeRng(RefCell<StdRng>);

impl NodeRng {
    pub fn seed_from_u64(seed: u64) -> NodeRng {
        NodeRng(RefCell::new(StdRng::seed_from_u64(seed)))
    }
}

impl Clone for NodeRng {
    fn clone(&self) -> NodeRng {
        let seed: [u8; 32] = self.0.borrow_mut().random();
        NodeRng(RefCell::new(StdRng::from_seed(seed)))
    }
}

impl TryRng for NodeRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        self.0.get_mut().try_next_u32()
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        self.0.get_mut().try_next_u64()
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.get_mut().try_fill_bytes(dst)
    }
}

impl TryCryptoRng for NodeRng {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_draws_its_own_stream_and_the_original_moves_on() {
        let mut a = NodeRng::seed_from_u64(7);
        let mut reference = NodeRng::seed_from_u64(7);
        let mut b = a.clone();
        let (x, y, r): (u64, u64, u64) = (a.random(), b.random(), reference.random());
        assert_ne!(x, y, "the clone repeats the original");
        assert_ne!(x, r, "cloning did not advance the original");
        // Deterministic: the same seed and the same clones give the same streams.
        let mut again = NodeRng::seed_from_u64(7);
        let mut again_b = again.clone();
        assert_eq!((again.random::<u64>(), again_b.random::<u64>()), (x, y));
    }
}
