#!/bin/bash
# MongoDB with authentication as a one-member replica set: transactions and change
# streams need a replica set, and a replica set with authentication needs a key file
# that its members share. With one member the key never leaves this volume, so it is
# generated on first start instead of being one more secret to hand around.
set -euo pipefail
key=/data/configdb/replica-set.key
if [ ! -s "$key" ]; then
  head -c 756 /dev/urandom | base64 -w 0 > "$key"
fi
chown mongodb:mongodb "$key"
chmod 400 "$key"
exec docker-entrypoint.sh mongod --replSet rs0 --keyFile "$key" --bind_ip_all
