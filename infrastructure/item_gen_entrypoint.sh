#!/bin/sh
# ItemGen container entry point: restore the prebaked uv cache into /tmp, then start the
# ordinary Lambda runtime. Lambda gives every new container an empty /tmp, so the copy runs
# once per cold start; warm invocations find it in place. See infrastructure/item_gen.Dockerfile.
set -e
if [ -d /opt/stactools-envs/uv-cache ] && [ ! -e /tmp/uv-cache/.prebaked ]; then
    mkdir -p /tmp/uv-cache
    cp -a /opt/stactools-envs/uv-cache/. /tmp/uv-cache/
    touch /tmp/uv-cache/.prebaked
fi
exec /lambda-entrypoint.sh "$@"
