#!/usr/bin/env bash
# Self-signed CA and a SuperLink server certificate for 127.0.0.1 / localhost (TLS).
#
#   deploy/make-certs.sh OUT [EXTRA_SAN...]
#
# Writes OUT/ca.crt (give it to every site: SuperNode --root-certificates, flwr's
# root-certificates), OUT/ca.key (keep it: it signs server certificates), OUT/server.crt
# and OUT/server.key (the SuperLink's, mode 0600).  EXTRA_SAN: more subjectAltNames
# for a real host, e.g. DNS:fl.example.org IP:10.0.0.5.  Refuses to overwrite OUT/ca.key.
# For a real federation use your institution's CA where you have one.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    echo "usage: $0 OUT [EXTRA_SAN...]" >&2
    exit 2
fi
out=$1
shift
if [[ -e "$out/ca.key" ]]; then
    echo "$0: $out/ca.key exists; refusing to overwrite certificates" >&2
    exit 1
fi
mkdir -p "$out"
chmod 700 "$out"
umask 077

san="DNS:localhost,IP:127.0.0.1"
for extra in "$@"; do
    san="$san,$extra"
done

openssl req -x509 -newkey rsa:3072 -nodes -sha256 -days 365 \
    -keyout "$out/ca.key" -out "$out/ca.crt" \
    -subj "/CN=flame-private federation CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

openssl req -newkey rsa:3072 -nodes -sha256 \
    -keyout "$out/server.key" -out "$out/server.csr" \
    -subj "/CN=localhost" 2>/dev/null

cat > "$out/server.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$san
EXT

openssl x509 -req -in "$out/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
    -CAcreateserial -out "$out/server.crt" -days 365 -sha256 \
    -extfile "$out/server.ext" 2>/dev/null
rm -f "$out/server.csr" "$out/server.ext" "$out/ca.srl"

chmod 600 "$out/ca.key" "$out/server.key"
chmod 644 "$out/ca.crt" "$out/server.crt"
openssl verify -CAfile "$out/ca.crt" "$out/server.crt" >/dev/null
echo "certificates in $out: ca.crt (to every site), server.crt + server.key (SuperLink only), ca.key (keep offline)"
