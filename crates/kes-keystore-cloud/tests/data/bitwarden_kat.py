#!/usr/bin/env python3
# Run: python3 bitwarden_kat.py (needs the `cryptography` package). Its output is pasted into
# the known-answer tests of src/bitwarden/crypto.rs and kes-testkit/src/bitwarden.rs.
# One-off generator of known-answer vectors for Bitwarden's access-token key derivation and
# EncString type 2 (AES-256-CBC + HMAC-SHA256), with Python's `cryptography`.
import base64, hmac, hashlib, json
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.hazmat.primitives import hashes

seed = bytes(range(16))
prk = hmac.new(b"bitwarden-accesstoken", seed, hashlib.sha256).digest()
key = HKDFExpand(hashes.SHA256(), 64, b"sm-access-token").derive(prk)
print("derived", key.hex())

def enc(key, iv, pt):
    p = padding.PKCS7(128).padder(); data = p.update(pt) + p.finalize()
    e = Cipher(algorithms.AES(key[:32]), modes.CBC(iv)).encryptor()
    ct = e.update(data) + e.finalize()
    mac = hmac.new(key[32:], iv + ct, hashlib.sha256).digest()
    return "2." + base64.b64encode(iv).decode() + "|" + base64.b64encode(ct).decode() + "|" + base64.b64encode(mac).decode()

k2 = bytes(range(64, 128))
print("enc_hello", enc(k2, bytes(range(16)), b"hello kes"))
print("enc_empty", enc(k2, bytes(range(16, 32)), b""))
org = bytes(range(100, 164))
payload = json.dumps({"encryptionKey": base64.b64encode(org).decode()}).encode()
print("payload", enc(key, bytes(range(32, 48)), payload))
print("orgkey_b64", base64.b64encode(org).decode())
