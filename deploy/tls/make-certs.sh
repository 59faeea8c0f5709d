#!/bin/sh
# Makes the certificates for TLS between Switchboard nodes, once per cluster: a CA (ca.pem and
# ca-key.pem) and one node certificate it signs (node.pem, node-key.pem), with ECDSA P-256 keys.
# Every node presents the same node certificate; it names `switchboard` (the fixed name every
# node checks a peer's certificate for, since node names and addresses change) and may act as
# both TLS server and client. Nothing here is committed: keep ca-key.pem off the nodes (it only
# signs), and the output directory out of git (deploy/tls/certs/ is ignored).
#
#   deploy/tls/make-certs.sh [DIR [OWNER]]     # DIR defaults to deploy/tls/certs
#
# OWNER (a uid, e.g. 10001, the image's node user) is given the node key, for a bind mount such
# as docker-compose.tls.yml's. An existing CA in DIR is kept, so running it again re-issues only
# the node certificate.
set -eu

dir=${1:-deploy/tls/certs}
owner=${2:-}
days=825
mkdir -p "$dir"
umask 077

if [ ! -f "$dir/ca.pem" ]; then
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
        -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" -days 3650 \
        -subj "/CN=Switchboard cluster CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$dir/node-key.pem" -out "$dir/node.csr" -subj "/CN=switchboard" 2>/dev/null
extensions=$(mktemp)
trap 'rm -f "$extensions" "$dir/node.csr"' EXIT
cat > "$extensions" <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:switchboard
EXT
openssl x509 -req -in "$dir/node.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" \
    -CAcreateserial -out "$dir/node.pem" -days "$days" -extfile "$extensions" 2>/dev/null
rm -f "$dir/ca.srl"

chmod 0644 "$dir/ca.pem" "$dir/node.pem"
chmod 0600 "$dir/ca-key.pem" "$dir/node-key.pem"
if [ -n "$owner" ]; then
    chown "$owner" "$dir/node-key.pem"
fi
echo "wrote $dir/ca.pem, $dir/node.pem and $dir/node-key.pem (and the CA's key, $dir/ca-key.pem)"
