//! Fuzzes descriptor parsing: never a panic, and any descriptor accepted writes out to text
//! that parses to the same descriptor (same info hash, same paths — which validation keeps
//! inside the data directory).
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pd::descriptor::Descriptor;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(d) = Descriptor::parse(text) {
        let again = Descriptor::parse(&d.to_yaml()).expect("a descriptor's own YAML parses");
        assert_eq!(again.info_hash, d.info_hash);
        assert_eq!(again, d);
    }
});
