//! Request decoding: every request body type, and path routing, on arbitrary input.
#![no_main]
use kes_types::wire::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<GenerateRequest>(data);
    let _ = serde_json::from_slice::<EncryptRequest>(data);
    let _ = serde_json::from_slice::<DecryptRequest>(data);
    let _ = serde_json::from_slice::<HmacRequest>(data);
    let _ = serde_json::from_slice::<ImportKeyRequest>(data);
    let _ = serde_json::from_slice::<Vec<DecryptRequest>>(data);
    if let Ok(path) = std::str::from_utf8(data) {
        let routes = kes_server::routes::Routes::new(&Default::default());
        let _ = routes.find(path);
        let cleaned = kes_server::routes::clean_path(path);
        assert_eq!(kes_server::routes::clean_path(&cleaned), cleaned, "cleaning is idempotent");
        let _ = kes_types::valid_name(path);
        let _ = kes_types::valid_pattern(path);
    }
});
