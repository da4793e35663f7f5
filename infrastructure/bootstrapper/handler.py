"""CloudFormation custom resource that bootstraps pgstac on the RDS instance.

Adapted from eoapi-cdk's bootstrapper (MIT, Development Seed), which does the same first four
steps; this one also creates a login that holds only pgstac's `pgstac_ingest` role, for ItemLoad.

Resource properties:
- conn_secret_arn: the RDS admin secret (written by RDS / CDK).
- new_user_secret_arn: the application user's secret (gets pgstac_admin, as in eoapi-cdk).
- ingest_user_secret_arn: the ingest user's secret (gets pgstac_ingest only).
- pgstac_version: the pgstac version to migrate to.
- mosaic_index: "TRUE" creates the mosaic search index (eoapi-cdk's default).
"""

import json
import logging
import urllib.request

import boto3
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from pypgstac.db import PgstacDB
from pypgstac.migrate import Migrate

logger = logging.getLogger("pgstac-bootstrap")
logger.setLevel(logging.INFO)


def send(event, context, status, data, physical_id, reason=None):
    """Report the outcome to CloudFormation's pre-signed response URL."""
    body = json.dumps(
        {
            "Status": status,
            "Reason": reason or f"See CloudWatch log stream {context.log_stream_name}",
            "PhysicalResourceId": physical_id,
            "StackId": event["StackId"],
            "RequestId": event["RequestId"],
            "LogicalResourceId": event["LogicalResourceId"],
            "NoEcho": False,
            "Data": data,
        }
    ).encode()
    request = urllib.request.Request(
        event["ResponseURL"],
        data=body,
        method="PUT",
        headers={"content-type": "", "content-length": str(len(body))},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        logger.info("CloudFormation response status %s", response.status)


def get_secret(arn):
    """Read one JSON secret from Secrets Manager."""
    client = boto3.client("secretsmanager")
    return json.loads(client.get_secret_value(SecretId=arn)["SecretString"])


def create_db(cur, db_name):
    """Create the pgstac database unless it exists."""
    cur.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", [db_name])
    if not cur.fetchone():
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db_name)))


def upsert_user(cur, username, password):
    """Create a login role, or reset its password when it exists."""
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [username])
    verb = "ALTER" if cur.fetchone() else "CREATE"
    cur.execute(
        sql.SQL(verb + " USER {} WITH LOGIN PASSWORD {}").format(
            sql.Identifier(username), sql.Literal(password)
        )
    )


def grant_app_user(cur, db_name, username):
    """The application user: all pgstac roles, as eoapi-cdk grants them."""
    cur.execute(
        sql.SQL(
            "GRANT CONNECT, CREATE ON DATABASE {db} TO {user};"
            "GRANT USAGE ON SCHEMA public TO {user};"
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL PRIVILEGES ON TABLES TO {user};"
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL PRIVILEGES ON SEQUENCES TO {user};"
            "GRANT pgstac_read, pgstac_ingest, pgstac_admin TO {user};"
        ).format(db=sql.Identifier(db_name), user=sql.Identifier(username))
    )


def grant_ingest_user(cur, db_name, username):
    """The ingest user: connect, and pgstac's ingest role only (no DDL, no admin)."""
    cur.execute(
        sql.SQL(
            "GRANT CONNECT ON DATABASE {db} TO {user};"
            "GRANT USAGE ON SCHEMA public TO {user};"
            "GRANT pgstac_ingest TO {user};"
        ).format(db=sql.Identifier(db_name), user=sql.Identifier(username))
    )


def bootstrap(params):
    """Create the database and users, install PostGIS and migrate pgstac."""
    admin = get_secret(params["conn_secret_arn"])
    app = get_secret(params["new_user_secret_arn"])
    ingest = get_secret(params["ingest_user_secret_arn"])
    db_name = app["dbname"]

    def admin_conninfo(dbname):
        return make_conninfo(
            dbname=dbname,
            user=admin["username"],
            password=admin["password"],
            host=admin["host"],
            port=admin["port"],
        )

    with (
        psycopg.connect(admin_conninfo(admin.get("dbname", "postgres")), autocommit=True) as conn,
        conn.cursor() as cur,
    ):
        create_db(cur, db_name)
        upsert_user(cur, app["username"], app["password"])
        upsert_user(cur, ingest["username"], ingest["password"])
        cur.execute(
            sql.SQL("ALTER DATABASE {} SET search_path TO pgstac, public").format(
                sql.Identifier(db_name)
            )
        )

    with psycopg.connect(admin_conninfo(db_name), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        with PgstacDB(connection=conn) as pgdb:
            logger.info("pgstac version before migration: %s", pgdb.version)
            Migrate(pgdb).run_migration(params["pgstac_version"])

    with (
        psycopg.connect(
            admin_conninfo(db_name),
            autocommit=True,
            options="-c search_path=pgstac,public",
        ) as conn,
        conn.cursor() as cur,
    ):
        grant_app_user(cur, db_name, app["username"])
        grant_ingest_user(cur, db_name, ingest["username"])
        if str(params.get("mosaic_index", "")).upper() == "TRUE":
            cur.execute(
                "CREATE INDEX IF NOT EXISTS searches_mosaic ON searches ((true)) "
                "WHERE metadata->>'type'='mosaic'"
            )

    # Both users must be able to log in and see pgstac before the stack reports success.
    for user in (app, ingest):
        conninfo = make_conninfo(
            dbname=db_name,
            user=user["username"],
            password=user["password"],
            host=admin["host"],
            port=admin["port"],
        )
        with psycopg.connect(conninfo) as conn:
            version = conn.execute("SELECT pgstac.get_version()").fetchone()[0]
            logger.info("%s sees pgstac %s", user["username"], version)


def handler(event, context):
    """Lambda entry point for the custom resource."""
    physical_id = event.get("PhysicalResourceId") or context.log_stream_name
    if event["RequestType"] not in ("Create", "Update"):
        # Deleting the stack never drops data; the RDS instance has its own removal policy.
        send(event, context, "SUCCESS", {}, physical_id)
        return
    try:
        bootstrap(event["ResourceProperties"])
    except Exception as e:
        logger.exception("bootstrap failed")
        # Report and return: raising would make Lambda retry this async invocation.
        send(event, context, "FAILED", {}, physical_id, reason=f"bootstrap failed: {e}"[:1000])
        return
    send(event, context, "SUCCESS", {}, physical_id)
