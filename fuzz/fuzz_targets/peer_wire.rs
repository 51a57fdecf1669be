//! Fuzzes the peer wire decoder (handshake and frames): it must never panic, every frame it
//! accepts must encode back to exactly its bytes, and a length it rejects must be rejected from
//! the header alone (what the connection reader relies on to bound its reads).
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pd::swarm::wire::{self, FRAME_HEADER, HANDSHAKE_LEN, MAX_BODY};

fuzz_target!(|data: &[u8]| {
    if let Ok(hs) = <&[u8; HANDSHAKE_LEN]>::try_from(data.get(..HANDSHAKE_LEN).unwrap_or(&[])) {
        if let Ok(h) = wire::decode_handshake(hs) {
            assert_eq!(&wire::encode_handshake(&h), hs);
        }
    }
    let mut rest = data;
    while let Ok(Some((msg, used))) = wire::decode(rest) {
        assert!(used <= rest.len());
        assert_eq!(wire::encode(&msg), &rest[..used], "decode/encode is not the identity on {msg:?}");
        rest = &rest[used..];
    }
    if let Some(h) = rest.get(..FRAME_HEADER) {
        if let Ok(header) = wire::parse_header(h.try_into().unwrap_or([0; FRAME_HEADER])) {
            assert!(header.body_len <= MAX_BODY, "a header admitted {} body bytes", header.body_len);
        }
    }
});
