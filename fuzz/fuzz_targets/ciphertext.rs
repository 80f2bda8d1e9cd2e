//! Decrypting arbitrary bytes in any layout must fail cleanly or succeed, never panic.
#![no_main]
use kes_crypto::{KeyType, SecretKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (ad, ct) = data.split_at(data.len().min(8));
    for kind in [KeyType::Aes256, KeyType::ChaCha20] {
        let key = SecretKey::new(kind, [7; 32]);
        let _ = key.decrypt(ct, ad);
        // What we encrypt we must decrypt, whatever the input.
        let sealed = key.encrypt(ct, ad);
        assert_eq!(key.decrypt(&sealed, ad).ok().as_deref().map(|v| v.as_slice()), Some(ct));
    }
});
