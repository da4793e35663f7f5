# The ingest API Lambda image (behind API Gateway). Build context: the repository root.
#   docker build -f infrastructure/ingest_api.Dockerfile .
# It validates requests as ItemGen does and reads the ledger as ItemLoad writes it, so it
# carries both stage packages (not their runtimes: no uv, no stactools) and the API package.
ARG PYTHON_VERSION=3.11

FROM public.ecr.aws/lambda/python:${PYTHON_VERSION} AS requirements
RUN pip install --no-cache-dir uv
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY packages ./packages
RUN uv export --frozen --no-dev --no-default-groups --no-emit-workspace \
        --package ingest-api -o /src/requirements.txt

FROM public.ecr.aws/lambda/python:${PYTHON_VERSION}
COPY --from=requirements /src/requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt --target "${LAMBDA_TASK_ROOT}" \
    && rm /tmp/requirements.txt
COPY packages/ingest-common /tmp/src/ingest-common
COPY packages/item-gen /tmp/src/item-gen
COPY packages/item-load /tmp/src/item-load
COPY packages/ingest-api /tmp/src/ingest-api
RUN pip install --no-cache-dir --no-deps --target "${LAMBDA_TASK_ROOT}" \
        /tmp/src/ingest-common /tmp/src/item-gen /tmp/src/item-load /tmp/src/ingest-api \
    && rm -rf /tmp/src

CMD ["ingest_api.handler.handler"]
