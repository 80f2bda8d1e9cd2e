//! Stored key values come from external keystores: parsing must never panic, and whatever
//! parses must survive an encode/parse round trip.
#![no_main]
use kes_crypto::KeyVersion;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(kv) = KeyVersion::parse(data) {
        let again = KeyVersion::parse(&kv.encode()).expect("re-encoded key parses");
        assert_eq!(again.key, kv.key);
    }
});
