# ItemLoad Lambda image. Build context: the repository root (see infrastructure/assets.py).
#   docker build -f infrastructure/item_load.Dockerfile .
# Dependencies come from the workspace lock, so the image loads with exactly the pypgstac the
# tests ran against (and that config.yml's database.pgstac_version must equal).
ARG PYTHON_VERSION=3.11

FROM public.ecr.aws/lambda/python:${PYTHON_VERSION} AS requirements
RUN pip install --no-cache-dir uv
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY packages ./packages
RUN uv export --frozen --no-dev --no-default-groups --no-emit-workspace \
        --package item-load -o /src/requirements.txt

FROM public.ecr.aws/lambda/python:${PYTHON_VERSION}
COPY --from=requirements /src/requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt --target "${LAMBDA_TASK_ROOT}" \
    && rm /tmp/requirements.txt
COPY packages/ingest-common /tmp/src/ingest-common
COPY packages/item-load /tmp/src/item-load
RUN pip install --no-cache-dir --no-deps --target "${LAMBDA_TASK_ROOT}" \
        /tmp/src/ingest-common /tmp/src/item-load \
    && rm -rf /tmp/src

CMD ["item_load.handler.handler"]
