#!/bin/sh
# Lays out the root file system of the kes image in $2 from the binary $1: the binary, the
# shared libraries it links (as ldd lists them) and the dynamic loader, the CA bundle for
# keystores reached over public TLS, an unprivileged user (65532), /var/lib/kes for the Raft
# state and /var/lib/kes-kms for compose's shared demo keystore. Nothing else: no shell, no package manager.
set -eu
bin="$1"
out="$2"
mkdir -p "$out/usr/local/bin" "$out/etc/kes" "$out/var/lib/kes" "$out/var/lib/kes-kms" "$out/tmp"
cp "$bin" "$out/usr/local/bin/kes"
chmod 0755 "$out/usr/local/bin/kes"
# "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)"
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | while read -r lib; do
    mkdir -p "$out$(dirname "$lib")"
    cp -L "$lib" "$out$lib"
done
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$out/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/"
fi
echo "kes:x:65532:65532:kes:/var/lib/kes:/sbin/nologin" >"$out/etc/passwd"
echo "kes:x:65532:" >"$out/etc/group"
echo "hosts: files dns" >"$out/etc/nsswitch.conf"
# Owned by the user so that volumes mounted there start writable for it (compose's named
# volumes copy the image folder's owner); kes-kms is the demo filesystem keystore.
chown 65532:65532 "$out/var/lib/kes" "$out/var/lib/kes-kms"
chmod 0700 "$out/var/lib/kes" "$out/var/lib/kes-kms"
chmod 1777 "$out/tmp"
