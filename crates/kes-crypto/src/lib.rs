//! Secret keys, KES ciphertext layouts, KeyVersion encoding, identities and API keys
