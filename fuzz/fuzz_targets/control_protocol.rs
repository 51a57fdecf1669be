//! Fuzzes the control protocol decoders (what a local client can send the daemon, and what
//! p2pctl reads back): never a panic, and a length prefix above the limit is always refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pd::control::protocol::{self, HEADER_BYTES, MAX_REQUEST_BYTES};

fuzz_target!(|data: &[u8]| {
    if let Some(h) = data.get(..HEADER_BYTES) {
        let header: [u8; HEADER_BYTES] = h.try_into().unwrap_or([0; HEADER_BYTES]);
        match protocol::decode_header(header, MAX_REQUEST_BYTES) {
            Ok(len) => assert!(len <= MAX_REQUEST_BYTES),
            Err(_) => assert!(u32::from_be_bytes(header) as usize > MAX_REQUEST_BYTES),
        }
        let body = &data[HEADER_BYTES..];
        let _ = protocol::decode_request(body);
        let _ = protocol::decode_response(body);
    }
});
