#!/bin/sh
# ItemGen container entry point: restore the prebaked uv cache into /tmp, then start the
# ordinary Lambda runtime. Lambda gives every new container an empty /tmp, so this runs once per
# cold start; warm invocations find the cache in place. See infrastructure/item_gen.Dockerfile.
#
# Only the small parts uv writes beside (index metadata, locks, environment pointers; ~20 MB)
# are copied. The environments and unpacked wheels (hundreds of MB per environment) stay in the
# read-only image and are linked: uv and Python only read them.
set -e
prebaked=/opt/stactools-envs/uv-cache
cache="${UV_CACHE_DIR:-/tmp/uv-cache}"
if [ -d "$prebaked" ] && [ ! -e "$cache/.prebaked" ]; then
    mkdir -p "$cache/archive-v0"
    find "$prebaked" -mindepth 1 -maxdepth 1 ! -name archive-v0 -exec cp -a {} "$cache/" \;
    find "$prebaked/archive-v0" -mindepth 1 -maxdepth 1 -exec ln -sfn {} "$cache/archive-v0/" \;
    touch "$cache/.prebaked"
fi
exec /lambda-entrypoint.sh "$@"
