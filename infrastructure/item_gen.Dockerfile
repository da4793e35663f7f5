# ItemGen Lambda image. Build context: the repository root (see infrastructure/assets.py).
#   docker build -f infrastructure/item_gen.Dockerfile \
#     --build-arg PREBAKED_PACKAGES='["stactools-landsat"]' .
# ItemGen runs `uvx --with <package> … --from stactools stac <group> create-item ...` per request,
# so the image carries uv. Environments named in PREBAKED_PACKAGES are built into the image and
# used offline; any other package still works, it is downloaded at run time.
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

# Prebaking. PREBAKED_PACKAGES (config: item_gen.prebaked_packages) is a JSON list of packages
# or {"package": …, "extra_packages": […]} objects. item_gen.prebake builds each environment
# with the very `uvx_prefix` requests use, so the two cannot drift, and writes a manifest: a
# request whose environment it lists runs with UV_OFFLINE=1 (no PyPI, no resolution round trip).
# The cache is built at its run-time path, /tmp/uv-cache, and moved to the read-only
# /opt/stactools-envs; item_gen_entrypoint.sh restores it into Lambda's empty /tmp when a container
# starts: the small index and lock files are copied, the environments are linked, not copied.
# UV_LINK_MODE=copy makes each environment self-contained, UV_COMPILE_BYTECODE=1 compiles it
# now, since at run time it is read-only and Python could not cache its bytecode.
ARG PREBAKED_PACKAGES=""
ENV UV_LINK_MODE=copy
RUN UV_CACHE_DIR=/tmp/uv-cache UV_TOOL_DIR=/tmp/uv-tools UV_COMPILE_BYTECODE=1 HOME=/tmp \
        PYTHONPATH="${LAMBDA_TASK_ROOT}" python -m item_gen.prebake /opt/stactools-envs \
    && rm -rf /tmp/uv-tools /tmp/uv-cache

COPY infrastructure/item_gen_entrypoint.sh /opt/stactools-envs/entrypoint.sh
RUN chmod 0555 /opt/stactools-envs/entrypoint.sh

# Run-time uv locations: all under the writable /tmp.
ENV UV_CACHE_DIR=/tmp/uv-cache \
    UV_TOOL_DIR=/tmp/uv-tools \
    HOME=/tmp \
    PREBAKED_MANIFEST=/opt/stactools-envs/manifest.json

ENTRYPOINT ["/opt/stactools-envs/entrypoint.sh"]
CMD ["item_gen.handler.handler"]
