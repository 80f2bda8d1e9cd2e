#!/usr/bin/env python3
"""Generates vectors.json: known-answer tests for kes-crypto from an independent implementation.

Everything is computed with the Python `cryptography` package (AES-GCM, ChaCha20-Poly1305,
Ed25519), the standard library (HMAC-SHA256, base64) and a pure-Python HChaCha20, following the
formats described in the KES compatibility spec (sections 4.3 and 5). No upstream test data is
used; all inputs come from a fixed-seed PRNG so the output is reproducible:

    python3 crates/kes-crypto/testdata/gen_vectors.py > crates/kes-crypto/testdata/vectors.json
"""

import base64
import hashlib
import hmac
import json
import random
import struct
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

RNG = random.Random(0x6B6573)  # "kes"


def rand(n):
    return RNG.randbytes(n)


def b64(b):
    return base64.b64encode(b).decode()


# --- HChaCha20 (draft-irtf-cfrg-xchacha, section 2.2) ---------------------------------------


def _rotl(v, c):
    return ((v << c) & 0xFFFFFFFF) | (v >> (32 - c))


def _quarter(s, a, b, c, d):
    s[a] = (s[a] + s[b]) & 0xFFFFFFFF
    s[d] = _rotl(s[d] ^ s[a], 16)
    s[c] = (s[c] + s[d]) & 0xFFFFFFFF
    s[b] = _rotl(s[b] ^ s[c], 12)
    s[a] = (s[a] + s[b]) & 0xFFFFFFFF
    s[d] = _rotl(s[d] ^ s[a], 8)
    s[c] = (s[c] + s[d]) & 0xFFFFFFFF
    s[b] = _rotl(s[b] ^ s[c], 7)


def hchacha20(key, nonce16):
    assert len(key) == 32 and len(nonce16) == 16
    s = list(struct.unpack("<4I", b"expand 32-byte k"))
    s += list(struct.unpack("<8I", key))
    s += list(struct.unpack("<4I", nonce16))
    for _ in range(10):
        _quarter(s, 0, 4, 8, 12)
        _quarter(s, 1, 5, 9, 13)
        _quarter(s, 2, 6, 10, 14)
        _quarter(s, 3, 7, 11, 15)
        _quarter(s, 0, 5, 10, 15)
        _quarter(s, 1, 6, 11, 12)
        _quarter(s, 2, 7, 8, 13)
        _quarter(s, 3, 4, 9, 14)
    return struct.pack("<8I", *(s[0:4] + s[12:16]))


# Self-check against the published HChaCha20 test vector before trusting the implementation.
assert (
    hchacha20(bytes(range(32)), bytes.fromhex("000000090000004a0000000031415927")).hex()
    == "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc"
)


# --- KES sealing -----------------------------------------------------------------------------


def seal(kind, key, plaintext, ad, iv, nonce):
    """AEAD output (ciphertext || tag) as KES computes it; iv/nonce are not appended."""
    if kind == "AES256":
        derived = hmac.new(key, iv, hashlib.sha256).digest()
        return AESGCM(derived).encrypt(nonce, plaintext, ad)
    derived = hchacha20(key, iv)
    return ChaCha20Poly1305(derived).encrypt(nonce, plaintext, ad)


def key_id(key):
    return hashlib.sha256(key).digest()[:16].hex()


assert key_id(bytes(32)) == "66687aadf862bd776c8fc18b8e9f8e20"


def mp_str(s):
    b = s.encode()
    if len(b) < 32:
        return bytes([0xA0 | len(b)]) + b
    assert len(b) < 256
    return b"\xd9" + bytes([len(b)]) + b


def mp_bin(b):
    if len(b) < 256:
        return b"\xc4" + bytes([len(b)]) + b
    assert len(b) < 65536
    return b"\xc5" + struct.pack(">H", len(b)) + b


def msgpack_ct(alg, kid, iv, nonce, data):
    return b"\x95" + mp_str(alg) + mp_str(kid) + mp_bin(iv) + mp_bin(nonce) + mp_bin(data)


KEYS = {"AES256": rand(32), "ChaCha20": rand(32)}
ciphertexts = []


def add_ct(name, kind, ciphertext, ad, plaintext=None, iv=None, nonce=None, key=None):
    v = {
        "name": name,
        "kind": kind,
        "key": (key or KEYS[kind]).hex(),
        "associated_data": ad.hex(),
        "ciphertext": ciphertext.hex(),
        # null plaintext means decryption must fail
        "plaintext": None if plaintext is None else plaintext.hex(),
    }
    if iv is not None:
        # present only for current-layout vectors, which must also re-encrypt byte for byte
        v["iv"] = iv.hex()
        v["nonce"] = nonce.hex()
    ciphertexts.append(v)


def flip(b, i):
    out = bytearray(b)
    out[i] ^= 0x01
    return bytes(out)


# Current layout: AEAD output || iv || nonce.
for kind in ("AES256", "ChaCha20"):
    key = KEYS[kind]
    for label, pt, ad in [
        ("empty_no_ad", b"", b""),
        ("empty_with_ad", b"", b'{"bucket":"b","object":"o"}'),
        ("dek32_no_ad", rand(32), b""),
        ("dek32_with_ad", rand(32), rand(20)),
        ("one_byte", rand(1), b"ctx"),
        ("multi_block_no_ad", rand(100), b""),
        ("multi_block_with_ad", rand(300), rand(77)),
    ]:
        iv, nonce = rand(16), rand(12)
        ct = seal(kind, key, pt, ad, iv, nonce) + iv + nonce
        add_ct(f"current_{kind}_{label}", kind, ct, ad, pt, iv, nonce)

    # Tampering and wrong context on a 32-byte DEK.
    pt, ad, iv, nonce = rand(32), b"context", rand(16), rand(12)
    good = seal(kind, key, pt, ad, iv, nonce) + iv + nonce
    add_ct(f"current_{kind}_reference", kind, good, ad, pt, iv, nonce)
    add_ct(f"fail_{kind}_tampered_bytes", kind, flip(good, 0), ad)
    add_ct(f"fail_{kind}_tampered_tag", kind, flip(good, 32 + 15), ad)
    add_ct(f"fail_{kind}_tampered_iv", kind, flip(good, 48 + 3), ad)
    add_ct(f"fail_{kind}_tampered_nonce", kind, flip(good, 48 + 16 + 11), ad)
    add_ct(f"fail_{kind}_wrong_ad", kind, good, b"Context")
    add_ct(f"fail_{kind}_missing_ad", kind, good, b"")
    add_ct(f"fail_{kind}_truncated", kind, good[:-1], ad)
    add_ct(f"fail_{kind}_wrong_key", kind, good, ad, key=rand(32))
    other = "ChaCha20" if kind == "AES256" else "AES256"
    add_ct(f"fail_{kind}_opened_as_{other}", other, good, ad, key=key)
    # Exactly 28 bytes (iv+nonce only) and shorter must fail before any AEAD work.
    add_ct(f"fail_{kind}_28_bytes", kind, iv + nonce, b"")
    add_ct(f"fail_{kind}_empty", kind, b"", b"")

# Legacy MessagePack layout, all four accepted algorithm names. The name inside is ignored for
# decryption: the stored key's type decides.
for kind, alg in [
    ("AES256", "AES256-GCM_SHA256"),
    ("AES256", "AES256"),
    ("ChaCha20", "XCHACHA20-POLY1305"),
    ("ChaCha20", "ChaCha20"),
    ("AES256", "XCHACHA20-POLY1305"),
    ("ChaCha20", "AES256-GCM_SHA256"),
]:
    key = KEYS[kind]
    pt, ad, iv, nonce = rand(32), b"msgpack-ctx", rand(16), rand(12)
    data = seal(kind, key, pt, ad, iv, nonce)
    add_ct(f"msgpack_{kind}_named_{alg}", kind, msgpack_ct(alg, key_id(key), iv, nonce, data), ad, pt)

# MessagePack with bin16 for a long payload and str8 for a long key ID.
key = KEYS["ChaCha20"]
pt, iv, nonce = rand(400), rand(16), rand(12)
data = seal("ChaCha20", key, pt, b"", iv, nonce)
add_ct("msgpack_ChaCha20_bin16_payload", "ChaCha20", msgpack_ct("ChaCha20", "k" * 40, iv, nonce, data), b"", pt)

# MessagePack failures: every one of these is valid except for one detail, so it falls back to
# the raw layout and then fails authentication.
key = KEYS["AES256"]
pt, ad, iv, nonce = rand(32), b"", rand(16), rand(12)
data = seal("AES256", key, pt, ad, iv, nonce)
kid = key_id(key)
add_ct("fail_msgpack_unknown_algorithm", "AES256", msgpack_ct("AES-256-GCM", kid, iv, nonce, data), ad)
add_ct("fail_msgpack_empty_algorithm", "AES256", msgpack_ct("", kid, iv, nonce, data), ad)
add_ct("fail_msgpack_iv_15_bytes", "AES256", msgpack_ct("AES256", kid, iv[:15], nonce, data), ad)
add_ct("fail_msgpack_iv_17_bytes", "AES256", msgpack_ct("AES256", kid, iv + b"\x00", nonce, data), ad)
add_ct("fail_msgpack_nonce_11_bytes", "AES256", msgpack_ct("AES256", kid, iv, nonce[:11], data), ad)
add_ct("fail_msgpack_nonce_13_bytes", "AES256", msgpack_ct("AES256", kid, iv, nonce + b"\x00", data), ad)
add_ct("fail_msgpack_trailing_byte", "AES256", msgpack_ct("AES256", kid, iv, nonce, data) + b"\x00", ad)
add_ct("fail_msgpack_truncated", "AES256", msgpack_ct("AES256", kid, iv, nonce, data)[:-1], ad)
add_ct(
    "fail_msgpack_payload_as_str",
    "AES256",
    b"\x95" + mp_str("AES256") + mp_str(kid) + mp_bin(iv) + mp_bin(nonce) + b"\xd9" + bytes([len(data)]) + data,
    ad,
)
# Wrong lengths shifted so that a parser which only concatenated the fields, without checking
# their lengths, would produce a valid raw ciphertext: these fail only if the lengths are checked.
add_ct("fail_msgpack_iv_17_bytes_shifted", "AES256", msgpack_ct("AES256", kid, data[-1:] + iv, nonce, data[:-1]), ad)
add_ct("fail_msgpack_nonce_13_bytes_shifted", "AES256", msgpack_ct("AES256", kid, data[-1:] + iv[:15], iv[15:] + nonce, data[:-1]), ad)
add_ct("fail_msgpack_iv_15_nonce_13_shifted", "AES256", msgpack_ct("AES256", kid, iv[:15], iv[15:] + nonce, data), ad)
add_ct("fail_msgpack_garbage", "AES256", b"\x95" + rand(60), ad)
add_ct("fail_msgpack_tampered_payload", "AES256", msgpack_ct("AES256", kid, iv, nonce, flip(data, 5)), ad)

# Legacy JSON layout, both accepted AEAD names, with and without the optional id.
for kind, aead, with_id in [
    ("AES256", "AES-256-GCM-HMAC-SHA-256", True),
    ("ChaCha20", "ChaCha20Poly1305", False),
    ("AES256", "ChaCha20Poly1305", False),
    ("ChaCha20", "AES-256-GCM-HMAC-SHA-256", True),
]:
    key = KEYS[kind]
    pt, ad, iv, nonce = rand(32), b"json-ctx", rand(16), rand(12)
    doc = {"aead": aead}
    if with_id:
        doc["id"] = key_id(key)
    doc.update(iv=b64(iv), nonce=b64(nonce), bytes=b64(seal(kind, key, pt, ad, iv, nonce)))
    add_ct(f"json_{kind}_named_{aead}", kind, json.dumps(doc, separators=(",", ":")).encode(), ad, pt)

# JSON as Go reads it: any key order, whitespace, case-insensitive keys, unknown keys.
key = KEYS["AES256"]
pt, iv, nonce = rand(16), rand(16), rand(12)
data = seal("AES256", key, pt, b"", iv, nonce)
doc = '{ "BYTES" : "%s",\n "Nonce": "%s", "extra": [1, {"x": null}], "IV": "%s", "Aead": "AES-256-GCM-HMAC-SHA-256" }' % (
    b64(data),
    b64(nonce),
    b64(iv),
)
add_ct("json_go_key_rules", "AES256", doc.encode(), b"", pt)


def json_ct(aead, iv, nonce, data):
    return json.dumps({"aead": aead, "iv": b64(iv), "nonce": b64(nonce), "bytes": b64(data)}).encode()


pt, ad, iv, nonce = rand(32), b"", rand(16), rand(12)
data = seal("AES256", key, pt, ad, iv, nonce)
# KES <= v0.6 ciphertexts: refused even though the bytes would open with the current derivation.
add_ct("fail_json_aead_AES-256-GCM", "AES256", json_ct("AES-256-GCM", iv, nonce, data), ad)
add_ct("fail_json_aead_unknown", "AES256", json_ct("AES-256-GCM-HMAC-SHA-512", iv, nonce, data), ad)
add_ct("fail_json_aead_missing", "AES256", json.dumps({"iv": b64(iv), "nonce": b64(nonce), "bytes": b64(data)}).encode(), ad)
add_ct("fail_json_iv_15_bytes", "AES256", json_ct("AES-256-GCM-HMAC-SHA-256", iv[:15], nonce, data), ad)
add_ct("fail_json_iv_17_bytes", "AES256", json_ct("AES-256-GCM-HMAC-SHA-256", iv + b"\x00", nonce, data), ad)
add_ct("fail_json_nonce_11_bytes", "AES256", json_ct("AES-256-GCM-HMAC-SHA-256", iv, nonce[:11], data), ad)
add_ct("fail_json_nonce_16_bytes", "AES256", json_ct("AES-256-GCM-HMAC-SHA-256", iv, nonce + bytes(4), data), ad)
add_ct("fail_json_iv_17_bytes_shifted", "AES256", json_ct("AES-256-GCM-HMAC-SHA-256", data[-1:] + iv, nonce, data[:-1]), ad)
add_ct("fail_json_nonce_13_bytes_shifted", "AES256", json_ct("AES-256-GCM-HMAC-SHA-256", data[-1:] + iv[:15], iv[15:] + nonce, data[:-1]), ad)
add_ct("fail_json_iv_15_nonce_13_shifted", "AES256", json_ct("AES-256-GCM-HMAC-SHA-256", iv[:15], iv[15:] + nonce, data), ad)
add_ct("fail_json_tampered_bytes", "AES256", json_ct("AES-256-GCM-HMAC-SHA-256", iv, nonce, flip(data, 0)), ad)
add_ct("fail_json_malformed", "AES256", b'{"aead":"AES-256-GCM-HMAC-SHA-256","iv":' + rand(40), ad)
add_ct("fail_json_trailing_data", "AES256", json_ct("AES-256-GCM-HMAC-SHA-256", iv, nonce, data) + b"x", ad)
add_ct("fail_json_iv_not_base64", "AES256", json_ct("AES-256-GCM-HMAC-SHA-256", iv, nonce, data).replace(b'"iv": "', b'"iv": "*'), ad)


def steer_first_bytes(kind, key, prefix, length, ad, iv, nonce):
    """A plaintext whose raw-layout ciphertext starts with `prefix` (keystream is fixed by key/iv/nonce)."""
    probe = seal(kind, key, bytes(length), ad, iv, nonce)  # ciphertext of zeros = keystream
    pt = bytearray(RNG.randbytes(length))
    for i, want in enumerate(prefix):
        pt[i] = probe[i] ^ want
    return bytes(pt)


# Raw ciphertexts that merely begin with a legacy marker byte must still open.
for kind in ("AES256", "ChaCha20"):
    key = KEYS[kind]
    for marker, label in [(b"\x95", "msgpack"), (b"{", "json")]:
        ad, iv, nonce = b"marker", rand(16), rand(12)
        pt = steer_first_bytes(kind, key, marker, 32, ad, iv, nonce)
        ct = seal(kind, key, pt, ad, iv, nonce) + iv + nonce
        assert ct[:1] == marker
        add_ct(f"raw_{kind}_starts_with_{label}_marker", kind, ct, ad, pt, iv, nonce)

# A raw ciphertext that is a complete, valid JSON object but not a legacy ciphertext: the legacy
# parse fails (no aead), so it is used as raw and opens. Go's JSON accepts any byte >= 0x20 in a
# string except '"' and '\', so only the tag has to be searched for.
for kind in ("AES256", "ChaCha20"):
    key = KEYS[kind]
    iv, nonce = b"0123456789abcdef", b'ABCDEFGHIJ"}'
    body = b'{"x":"pad'
    for attempt in range(100000):
        ad = b"search-%d" % attempt
        pt = steer_first_bytes(kind, key, body, len(body), ad, iv, nonce)
        sealed = seal(kind, key, pt, ad, iv, nonce)
        tag = sealed[len(body):]
        if all(b >= 0x20 and b not in (0x22, 0x5C) for b in tag):
            break
    else:
        raise SystemExit("no JSON-shaped tag found")
    ct = sealed + iv + nonce
    json.loads(ct.decode("latin-1"))  # well-formed JSON (Latin-1 only to make every byte a char)
    add_ct(f"raw_{kind}_is_valid_json_object", kind, ct, ad, pt, iv, nonce)

# --- KeyVersion encodings --------------------------------------------------------------------


def pb_varint(n):
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_field(num, wire, payload):
    key = pb_varint((num << 3) | wire)
    if wire == 0:
        return key + pb_varint(payload)
    return key + pb_varint(len(payload)) + payload


def pb_msg(fields):
    """fields: (num, value) with int -> varint, bytes -> length-delimited; proto3 skips defaults."""
    out = b""
    for num, value in fields:
        if isinstance(value, int):
            if value != 0:
                out += pb_field(num, 0, value)
        elif isinstance(value, str):
            if value:
                out += pb_field(num, 2, value.encode())
        elif value is not None:
            out += pb_field(num, 2, value)
    return out


def pb_key_version(secret, secret_type, hmac_key, hmac_hash, ts, created_by, extra=b""):
    return pb_msg(
        [
            (1, None if secret is None else pb_msg([(1, secret), (2, secret_type)])),
            (2, None if hmac_key is None else pb_msg([(1, hmac_key), (2, hmac_hash)])),
            (3, None if ts is None else pb_msg([(1, ts[0]), (2, ts[1])])),
            (4, created_by),
        ]
    ) + extra


def go_time(seconds, nanos):
    """Go's RFC3339Nano rendering of a UTC instant."""
    import datetime

    t = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    s = t.strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        s += "." + ("%09d" % nanos).rstrip("0")
    return s + "Z"


key_versions = []


def add_kv(name, stored, kind=None, key=None, hmac_key=None, created_at=None, created_by="", reencode=False):
    v = {"name": name, "stored": stored.decode("latin-1") if isinstance(stored, bytes) else stored}
    if kind is None:
        v["ok"] = False
    else:
        v.update(
            ok=True,
            kind=kind,
            key=key.hex(),
            hmac_key=None if hmac_key is None else hmac_key.hex(),
            created_at=created_at,
            created_by=created_by,
            reencode=reencode,
        )
    key_versions.append(v)


identity = hashlib.sha256(b"creator").hexdigest()
k1, h1 = rand(32), rand(32)
add_kv(
    "protobuf_aes_timestamp_1_2",
    b64(pb_key_version(k1, 1, h1, 1, (1, 2), identity)),
    "AES256", k1, h1, "1970-01-01T00:00:01.000000002Z", identity, reencode=True,
)
k2, h2 = rand(32), rand(32)
add_kv(
    "protobuf_chacha_recent",
    b64(pb_key_version(k2, 2, h2, 1, (1709164800, 123456789), "root")),
    "ChaCha20", k2, h2, go_time(1709164800, 123456789), "root", reencode=True,
)
add_kv(
    "protobuf_no_created_by",
    b64(pb_key_version(k2, 2, h2, 1, (1709164800, 0), "")),
    "ChaCha20", k2, h2, go_time(1709164800, 0), "", reencode=True,
)
add_kv(
    "protobuf_go_zero_time",
    b64(pb_key_version(k1, 1, h1, 1, (-62135596800, 0), "x")),
    "AES256", k1, h1, "0001-01-01T00:00:00Z", "x", reencode=True,
)
# A missing Timestamp reads as protobuf's zero Timestamp, the Unix epoch.
add_kv(
    "protobuf_no_timestamp",
    b64(pb_key_version(k1, 1, h1, 1, None, "x")),
    "AES256", k1, h1, "1970-01-01T00:00:00Z", "x",
)
add_kv(
    "protobuf_unknown_field_ignored",
    b64(pb_key_version(k1, 1, h1, 1, (5, 0), "x", extra=pb_field(15, 0, 7))),
    "AES256", k1, h1, go_time(5, 0), "x",
)
# Go's base64 decoder skips CR and LF.
add_kv(
    "protobuf_trailing_newline",
    b64(pb_key_version(k1, 1, h1, 1, (5, 0), "x")) + "\n",
    "AES256", k1, h1, go_time(5, 0), "x",
)
add_kv("fail_protobuf_missing_hmac_key", b64(pb_key_version(k1, 1, None, 0, (1, 2), "x")))
add_kv("fail_protobuf_hmac_key_31_bytes", b64(pb_key_version(k1, 1, h1[:31], 1, (1, 2), "x")))
add_kv("fail_protobuf_hmac_hash_2", b64(pb_key_version(k1, 1, h1, 2, (1, 2), "x")))
add_kv("fail_protobuf_hmac_hash_0", b64(pb_key_version(k1, 1, h1, 0, (1, 2), "x")))
add_kv("fail_protobuf_missing_secret_key", b64(pb_key_version(None, 0, h1, 1, (1, 2), "x")))
add_kv("fail_protobuf_secret_type_0", b64(pb_key_version(k1, 0, h1, 1, (1, 2), "x")))
add_kv("fail_protobuf_secret_type_3", b64(pb_key_version(k1, 3, h1, 1, (1, 2), "x")))
add_kv("fail_protobuf_secret_16_bytes", b64(pb_key_version(k1[:16], 1, h1, 1, (1, 2), "x")))
add_kv("fail_protobuf_truncated", b64(pb_key_version(k1, 1, h1, 1, (1, 2), "x")[:-1]))
add_kv("fail_protobuf_invalid_utf8_created_by", b64(pb_key_version(k1, 1, h1, 1, (1, 2), "x")[:-1] + b"\xff"))
add_kv("fail_not_base64", "not base64!")
padded = b64(pb_key_version(k1, 1, h1, 1, (1, 2), "xy"))
assert padded.endswith("=")
add_kv("fail_base64_missing_padding", padded.rstrip("="))
add_kv("fail_empty", "")

# Legacy JSON documents (no HMAC key).
k3 = rand(32)
add_kv("json_bytes_only", json.dumps({"bytes": b64(k3)}), "AES256", k3)
add_kv(
    "json_full_aes",
    json.dumps({"bytes": b64(k3), "algorithm": "AES256-GCM_SHA256", "created_at": "2021-06-01T12:30:45.5Z", "created_by": identity}),
    "AES256", k3, None, "2021-06-01T12:30:45.5Z", identity,
)
add_kv(
    "json_v0_22_chacha_with_version",
    json.dumps({"version": "v1", "bytes": b64(k3), "algorithm": "XCHACHA20-POLY1305", "created_at": "2023-01-02T03:04:05.123456789Z", "created_by": "admin"}),
    "ChaCha20", k3, None, "2023-01-02T03:04:05.123456789Z", "admin",
)
add_kv("json_algorithm_ChaCha20", json.dumps({"bytes": b64(k3), "algorithm": "ChaCha20"}), "ChaCha20", k3)
add_kv("json_algorithm_AES256", json.dumps({"bytes": b64(k3), "algorithm": "AES256"}), "AES256", k3)
add_kv("json_algorithm_empty_is_aes", json.dumps({"bytes": b64(k3), "algorithm": ""}), "AES256", k3)
add_kv(
    "json_offset_time_and_null_created_by",
    json.dumps({"bytes": b64(k3), "created_at": "2022-02-03T04:05:06+02:00", "created_by": None}),
    "AES256", k3, None, "2022-02-03T04:05:06+02:00", "",
)
# Exactly the document kes-crypto writes for a key without an HMAC key.
add_kv(
    "json_as_written_by_encode",
    '{"bytes":"%s","algorithm":"XCHACHA20-POLY1305","created_at":"2022-09-10T11:12:13.000000001Z","created_by":"op \\"quoted\\""}' % b64(k3),
    "ChaCha20", k3, None, "2022-09-10T11:12:13.000000001Z", 'op "quoted"', reencode=True,
)
add_kv("fail_json_algorithm_unknown", json.dumps({"bytes": b64(k3), "algorithm": "AES-256-GCM"}))
add_kv("fail_json_key_16_bytes", json.dumps({"bytes": b64(k3[:16])}))
add_kv("fail_json_no_bytes", json.dumps({"algorithm": "AES256"}))
add_kv("fail_json_bad_created_at", json.dumps({"bytes": b64(k3), "created_at": "yesterday"}))
add_kv("fail_json_array", "[1,2,3]")
add_kv("fail_json_string", '"abc"')
add_kv("fail_json_number", "12345")

# --- API keys and identities -------------------------------------------------------------------

api_keys = []
for seed in [bytes(32), bytes(range(32)), rand(32), rand(32)]:
    sk = Ed25519PrivateKey.from_private_bytes(seed)
    spki = sk.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    raw_pub = sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    api_keys.append(
        {
            "seed": seed.hex(),
            "text": "kes:v1:" + b64(b"\x00" + seed),
            "public_key": raw_pub.hex(),
            "spki_der": spki.hex(),
            "identity": hashlib.sha256(spki).hexdigest(),
            "pkcs8_der": sk.private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).hex(),
            "pkcs8_pem": sk.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode(),
        }
    )

bad_api_keys = [
    "kes:v1:" + b64(b"\x01" + rand(32)),  # unknown key type
    "kes:v1:" + b64(b"\x00" + rand(31)),  # too short
    "kes:v1:" + b64(b"\x00" + rand(33)),  # too long
    "kes:v1:" + b64(b"\x00" + rand(32))[:-1],  # not base64
    "kes:v2:" + b64(b"\x00" + rand(32)),  # unknown prefix is not stripped
    "",
]

hmacs = []
for msg in [b"", b"hello", rand(200)]:
    k = rand(32)
    hmacs.append({"key": k.hex(), "message": msg.hex(), "mac": hmac.new(k, msg, hashlib.sha256).hexdigest()})

json.dump(
    {
        "ciphertexts": ciphertexts,
        "key_versions": key_versions,
        "api_keys": api_keys,
        "bad_api_keys": bad_api_keys,
        "hmac": hmacs,
    },
    sys.stdout,
    indent=1,
)
sys.stdout.write("\n")
