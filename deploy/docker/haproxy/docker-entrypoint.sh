#!/bin/sh
# Entrypoint of the locally built haproxy image (deploy/docker/offline-images.sh), the same as the
# official image's: options alone run haproxy with them, and `haproxy ...` runs in master-worker
# mode (-W, reloads on SIGUSR2) in the foreground (-db), logging wherever the configuration says.
set -e

# The first argument is an option (-f, --something): haproxy is meant.
if [ "${1#-}" != "$1" ]; then
    set -- haproxy "$@"
fi

if [ "$1" = 'haproxy' ]; then
    shift
    set -- haproxy -W -db "$@"
fi

exec "$@"
