//! Fuzzes the YAML configuration parsers (`p2pd.yaml` and `torrents/*.yaml`): never a panic,
//! bounded work on alias bombs and deep nesting, and a torrent file accepted writes out to
//! text that parses back to the same entry.
#![no_main]

use libfuzzer_sys::fuzz_target;
use p2pd::config::Config;
use p2pd::config::torrent_entry::TorrentEntry;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = Config::parse(text);
    if let Ok(entry) = TorrentEntry::parse(text) {
        let again = TorrentEntry::parse(&entry.to_yaml()).expect("a torrent file's own YAML parses");
        assert_eq!(again.info_hash(), entry.info_hash());
    }
});
