# ItemGen Lambda image. Build context: the repository root (see infrastructure/assets.py).
#   docker build -f infrastructure/item_gen.Dockerfile --build-arg PREBAKED_PACKAGES="stactools-landsat" .
# ItemGen runs `uvx --from stactools --with <package> stac <group> create-item ...` per request,
# so the image carries uv. Packages named in PREBAKED_PACKAGES (config: item_gen.prebaked_packages)
# are resolved and installed into a uv cache at build time; any other package still works, it is
# downloaded at run time.
ARG PYTHON_VERSION=3.11

FROM public.ecr.aws/lambda/python:${PYTHON_VERSION} AS requirements
RUN pip install --no-cache-dir uv
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY packages ./packages
RUN uv export --frozen --no-dev --no-default-groups --no-emit-workspace \
        --package item-gen -o /src/requirements.txt

FROM public.ecr.aws/lambda/python:${PYTHON_VERSION}
# uv goes to the system site-packages (/var/lang/bin/uv), on PATH for the handler's subprocess.
RUN pip install --no-cache-dir uv
COPY --from=requirements /src/requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt --target "${LAMBDA_TASK_ROOT}" \
    && rm /tmp/requirements.txt
COPY packages/ingest-common /tmp/src/ingest-common
COPY packages/item-gen /tmp/src/item-gen
RUN pip install --no-cache-dir --no-deps --target "${LAMBDA_TASK_ROOT}" \
        /tmp/src/ingest-common /tmp/src/item-gen \
    && rm -rf /tmp/src

# Prebaking. Only /tmp is writable in Lambda, and uv must be able to write (lock) its cache, so
# a read-only cache in the image cannot be used in place. Instead the cache is built here at the
# very path it will have at run time (/tmp/uv-cache, so the cached environments' absolute paths
# stay valid), moved to the read-only /opt/stactools-envs, and copied back into the empty /tmp
# by infrastructure/item_gen_entrypoint.sh when a container starts. A warm container keeps it; a
# cold one pays a local disk copy instead of a download from PyPI. UV_LINK_MODE=copy makes the
# cached environments self-contained, so the copy needs no hard links across file systems.
ARG PREBAKED_PACKAGES=""
ENV UV_LINK_MODE=copy
RUN set -e; \
    mkdir -p /opt/stactools-envs; \
    if [ -n "${PREBAKED_PACKAGES}" ]; then \
        for package in ${PREBAKED_PACKAGES}; do \
            UV_CACHE_DIR=/tmp/uv-cache UV_TOOL_DIR=/tmp/uv-tools HOME=/tmp \
                uvx --from stactools --with "${package}" stac --help > /dev/null; \
        done; \
        mv /tmp/uv-cache /opt/stactools-envs/uv-cache; \
        rm -rf /tmp/uv-tools; \
    fi; \
    echo "${PREBAKED_PACKAGES}" > /opt/stactools-envs/PACKAGES

COPY infrastructure/item_gen_entrypoint.sh /opt/stactools-envs/entrypoint.sh
RUN chmod 0555 /opt/stactools-envs/entrypoint.sh

# Run-time uv locations: all under the writable /tmp.
ENV UV_CACHE_DIR=/tmp/uv-cache \
    UV_TOOL_DIR=/tmp/uv-tools \
    HOME=/tmp

ENTRYPOINT ["/opt/stactools-envs/entrypoint.sh"]
CMD ["item_gen.handler.handler"]
