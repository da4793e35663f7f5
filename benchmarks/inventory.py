"""``stactools-ingest inventory --stack`` against the seed's shell loop of ``aws sns publish``.

    uv run python benchmarks/inventory.py [--rows 10000] [--loop 20] [--workers 8]

Both publish item requests to the same emulated stack: moto in server mode on 127.0.0.1 (the
CloudFormation stack of tests/cli/moto_stack.py, its topics left without subscriptions), reached by
both through ``AWS_ENDPOINT_URL``. Reference: one ``aws sns publish`` process per request (the
AWS CLI, run from ``uvx --from awscli``'s environment, its interpreter started each time as the
seed's loop started it), timed on ``--loop`` requests. Ours: one ``inventory`` command over
``--rows`` hrefs, which must report every one published and none failed. Prints a table and a
final JSON line with the ratio of the per-message times.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import boto3
from _common import REPO, Timer, print_json, print_table
from moto.server import ThreadedMotoServer

sys.path.insert(0, str(REPO / "tests" / "cli"))
from moto_stack import STACK, _template

CLI = str(REPO / ".venv" / "bin" / "stactools-ingest")
AWSCLI = "awscli==1.46.3"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deploy(env: dict[str, str]) -> dict[str, str]:
    """The emulated stack's topics and queues; its outputs.

    The topics are left without subscriptions: moto's SNS-to-SQS delivery took seconds per
    batch here and grows with the queue, which would time moto, not the publishers. What each
    publisher reports published (exit code, the summary's count) is checked instead.
    """
    kwargs = {"endpoint_url": env["AWS_ENDPOINT_URL"], "region_name": "us-east-1"}
    cfn = boto3.client("cloudformation", **kwargs)
    cfn.create_stack(StackName=STACK, TemplateBody=json.dumps(_template()))
    return {
        o["OutputKey"]: o["OutputValue"]
        for o in cfn.describe_stacks(StackName=STACK)["Stacks"][0]["Outputs"]
    }


def aws_executable() -> str:
    """The ``aws`` script of uvx's cached awscli environment (installed once, untimed)."""
    out = subprocess.run(
        ["uvx", "--from", AWSCLI, "python", "-c", "import shutil; print(shutil.which('aws'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def request(href: str) -> dict:
    return {
        "package_name": "stactools-glad-glclu2020==0.1.1",
        "group_name": "gladglclu2020",
        "create_item_args": [href],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000, help="hrefs for `inventory`")
    parser.add_argument("--loop", type=int, default=20, help="`aws sns publish` calls timed")
    parser.add_argument("--workers", type=int, default=8, help="`inventory --workers`")
    args = parser.parse_args()
    os.environ.update(CREDENTIALS)  # this process's boto3 clients talk to moto too
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {**os.environ, **CREDENTIALS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    try:
        outputs = deploy(env)
        topic = outputs["ItemGenSNSTopicArn"]
        aws = aws_executable()
        print(f"moto on port {port}; aws CLI {aws}", file=sys.stderr)
        with Timer() as loop:
            for n in range(args.loop):
                message = json.dumps(request(f"s3://bucket/loop-{n}.tif"))
                subprocess.run(
                    [aws, "sns", "publish", "--topic-arn", topic, "--message", message],
                    env=env,
                    check=True,
                    capture_output=True,
                )
        with tempfile.TemporaryDirectory() as tmp:
            urls = Path(tmp) / "urls.txt"
            urls.write_text("".join(f"s3://bucket/tile-{n:07d}.tif\n" for n in range(args.rows)))
            cmd = [
                CLI, "inventory", str(urls), "--package", "stactools-glad-glclu2020==0.1.1",
                "--group", "gladglclu2020", "--stack", STACK, "--workers", str(args.workers),
                "--json",
            ]  # fmt: skip
            # its default checkpoint (kept, as a user's would be) goes to the temporary home
            home = {**env, "STACTOOLS_INGEST_HOME": str(Path(tmp) / "home")}
            with Timer() as ours:
                proc = subprocess.run(cmd, env=home, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"inventory failed: {proc.stderr[-2000:]}")
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        assert (summary["published"], summary["failed"]) == (args.rows, 0), summary
    finally:
        server.stop()
    per_loop, per_ours = loop.seconds / args.loop, ours.seconds / args.rows
    rows = [
        ("`aws sns publish` per request (seed loop)", args.loop, loop.seconds),
        (f"`inventory --workers {args.workers}` (CLI wall)", args.rows, ours.seconds),
    ]
    print_table(
        [(name, n, f"{s:.2f}", f"{n / s:,.1f}", f"{1000 * s / n:,.3f}") for name, n, s in rows],
        ("publisher", "messages", "seconds", "messages/s", "ms/message"),
    )
    print_json(
        {
            "rows": args.rows,
            "loop_messages": args.loop,
            "loop_s_per_message": round(per_loop, 4),
            "inventory_s_per_message": round(per_ours, 6),
            "inventory_vs_loop": round(per_loop / per_ours, 1),
            "workers": args.workers,
        }
    )


if __name__ == "__main__":
    main()
