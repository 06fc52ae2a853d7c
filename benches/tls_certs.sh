#!/usr/bin/env bash
# A throw-away CA and a server certificate for localhost / 127.0.0.1 signed by it (EC P-256),
# for TLS benchmarks and manual tries:
#   bash benches/tls_certs.sh DIR     # writes DIR/ca.pem, DIR/cert.pem, DIR/key.pem
#   matchstream serve --tls-cert DIR/cert.pem --tls-key DIR/key.pem
#   matchstream load --tls --ca DIR/ca.pem --server https://localhost:8080 …
set -euo pipefail
dir=${1:?usage: tls_certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
openssl req -x509 "${ec[@]}" -keyout ca.key -out ca.pem -days 30 -subj /CN=matchstream-bench-ca 2>/dev/null
openssl req "${ec[@]}" -keyout key.pem -out leaf.csr -subj /CN=localhost 2>/dev/null
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 30 \
  -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n') 2>/dev/null
rm -f leaf.csr ca.srl
echo "$dir: ca.pem cert.pem key.pem"
