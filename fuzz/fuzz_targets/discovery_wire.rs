//! Fuzzes the discovery datagram decoder: it must never panic, and whatever it accepts must
//! encode back to exactly the bytes it came from (one valid encoding per message).
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pd::discovery::wire;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = wire::decode(data) {
        assert_eq!(wire::encode(&packet), data, "decode/encode is not the identity on {packet:?}");
    }
});
