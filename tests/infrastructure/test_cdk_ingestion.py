"""The ingestion stack: queues, DLQs, event source mappings, functions, IAM, alarms, outputs."""

from __future__ import annotations

import json

import pytest

OUTPUTS = (
    "ItemGenSNSTopicArn",
    "ItemGenQueueUrl",
    "ItemGenDLQUrl",
    "ItemGenFunctionName",
    "ItemLoadTopicArn",
    "ItemLoadQueueUrl",
    "ItemLoadDLQUrl",
    "ItemLoadFunctionName",
    "PgstacSecret",
    "PgstacIngestSecret",
    "PayloadBucketName",
    "AlarmTopicArn",
    "ItemGenLogGroup",
    "ItemLoadLogGroup",
    "PostIngestTopicArn",
)


def _resources(template: dict, type_: str) -> dict:
    return {k: r for k, r in template["Resources"].items() if r["Type"] == type_}


def _one(template: dict, type_: str, prefix: str) -> tuple[str, dict]:
    matches = [(k, r) for k, r in _resources(template, type_).items() if k.startswith(prefix)]
    assert len(matches) == 1, f"expected one {type_} named {prefix}*, found {matches}"
    return matches[0]


@pytest.fixture(scope="module")
def ingestion(default_app) -> dict:
    return default_app.templates["ingestion"]


def test_outputs_have_stable_names(default_app):
    outputs = default_app.templates["ingestion"]["Outputs"]
    assert set(OUTPUTS) <= set(outputs)
    topic, _ = _one(default_app.templates["ingestion"], "AWS::SNS::Topic", "ItemGenTopic")
    assert outputs["ItemGenSNSTopicArn"]["Value"] == {"Ref": topic}
    log_group, _ = _one(
        default_app.templates["ingestion"], "AWS::Logs::LogGroup", "ItemLoadFunction"
    )
    assert outputs["ItemLoadLogGroup"]["Value"] == {"Ref": log_group}


@pytest.mark.parametrize("stage", ["ItemGen", "ItemLoad"])
def test_queue_has_encrypted_dlq_after_five_receives(ingestion, stage):
    dlq_id, dlq = _one(ingestion, "AWS::SQS::Queue", f"{stage}DeadLetterQueue")
    _, queue = _one(ingestion, "AWS::SQS::Queue", f"{stage}Queue")
    assert dlq["Properties"]["MessageRetentionPeriod"] == 14 * 24 * 3600
    assert dlq["Properties"]["SqsManagedSseEnabled"] is True
    assert queue["Properties"]["SqsManagedSseEnabled"] is True
    assert queue["Properties"]["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
        "maxReceiveCount": 5,
    }


@pytest.mark.parametrize("stage", ["ItemGen", "ItemLoad"])
def test_topic_feeds_queue_raw(ingestion, stage):
    topic_id, _ = _one(ingestion, "AWS::SNS::Topic", f"{stage}Topic")
    queue_id, _ = _one(ingestion, "AWS::SQS::Queue", f"{stage}Queue")
    subscriptions = [
        s["Properties"]
        for s in _resources(ingestion, "AWS::SNS::Subscription").values()
        if s["Properties"]["TopicArn"] == {"Ref": topic_id}
    ]
    assert subscriptions == [
        {
            "Protocol": "sqs",
            "TopicArn": {"Ref": topic_id},
            "Endpoint": {"Fn::GetAtt": [queue_id, "Arn"]},
            "RawMessageDelivery": True,
        }
    ]


@pytest.mark.parametrize(
    ("stage", "batch_size", "window", "concurrency"),
    [("ItemGen", 1, None, 50), ("ItemLoad", 1000, 60, 2)],
)
def test_event_source_mapping(ingestion, stage, batch_size, window, concurrency):
    function_id, _ = _one(ingestion, "AWS::Lambda::Function", f"{stage}Function")
    queue_id, _ = _one(ingestion, "AWS::SQS::Queue", f"{stage}Queue")
    _, mapping = _one(ingestion, "AWS::Lambda::EventSourceMapping", f"{stage}Function")
    props = mapping["Properties"]
    assert props["EventSourceArn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    assert props["FunctionName"] == {"Ref": function_id}
    assert props["BatchSize"] == batch_size
    assert props.get("MaximumBatchingWindowInSeconds") == window
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["ScalingConfig"] == {"MaximumConcurrency": concurrency}


@pytest.mark.parametrize("stage", ["ItemGen", "ItemLoad"])
def test_visibility_timeout_is_six_times_function_timeout(ingestion, stage):
    _, function = _one(ingestion, "AWS::Lambda::Function", f"{stage}Function")
    _, queue = _one(ingestion, "AWS::SQS::Queue", f"{stage}Queue")
    _, mapping = _one(ingestion, "AWS::Lambda::EventSourceMapping", f"{stage}Function")
    window = mapping["Properties"].get("MaximumBatchingWindowInSeconds", 0)
    assert (
        queue["Properties"]["VisibilityTimeout"] >= 6 * function["Properties"]["Timeout"] + window
    )


def test_item_gen_function(default_app, ingestion):
    topic_id, _ = _one(ingestion, "AWS::SNS::Topic", "ItemLoadTopic")
    bucket_id, _ = _one(ingestion, "AWS::S3::Bucket", "PayloadBucket")
    dlq_id, _ = _one(ingestion, "AWS::SQS::Queue", "ItemGenDeadLetterQueue")
    _, function = _one(ingestion, "AWS::Lambda::Function", "ItemGenFunction")
    props = function["Properties"]
    assert props["PackageType"] == "Image"
    assert (props["MemorySize"], props["Timeout"]) == (2048, 600)
    assert props["EphemeralStorage"] == {"Size": 4096}
    assert "VpcConfig" not in props  # it reaches PyPI and data hosts; no NAT traffic
    assert props["Environment"]["Variables"] == {
        "ITEM_LOAD_TOPIC_ARN": {"Ref": topic_id},
        "PAYLOAD_BUCKET": {"Ref": bucket_id},
        "REQUEST_TIMEOUT_SECONDS": "300",
        "DEAD_LETTER_QUEUE_URL": {"Ref": dlq_id},
        "WARM_RUNNER": "true",
        "WARM_WORKERS_PER_ENV": "2",
        "WARM_MAX_ENVIRONMENTS": "4",
        "LEDGER": "true",
        "MAX_RECEIVES": "5",
        "POWERTOOLS_SERVICE_NAME": "item-gen",
        "POWERTOOLS_METRICS_NAMESPACE": "stactools-ingest",
        "LOG_LEVEL": "INFO",
    }


def test_item_load_function_in_private_subnets_with_client_group(ingestion):
    _, function = _one(ingestion, "AWS::Lambda::Function", "ItemLoadFunction")
    props = function["Properties"]
    variables = props["Environment"]["Variables"]
    dlq_id, _ = _one(ingestion, "AWS::SQS::Queue", "ItemLoadDeadLetterQueue")
    assert variables["DEAD_LETTER_QUEUE_URL"] == {"Ref": dlq_id}
    assert variables["HREF_SCHEMES"] == "s3,https"
    assert "IngestUserSecret" in variables["PGSTAC_SECRET_ARN"]["Fn::ImportValue"]
    assert variables["CREATE_COLLECTIONS_IF_MISSING"] == "false"
    assert variables["PARTITION_STATS_INTERVAL_SECONDS"] == "60"
    assert variables["TOAST_COMPRESSION"] == "lz4"
    assert (variables["LEDGER"], variables["LEDGER_RETENTION_DAYS"]) == ("true", "30")
    assert variables["MAX_RECEIVES"] == "5"
    assert variables["POWERTOOLS_SERVICE_NAME"] == "item-load"
    vpc = props["VpcConfig"]
    assert len(vpc["SecurityGroupIds"]) == 1
    assert "DatabaseClientSecurityGroup" in vpc["SecurityGroupIds"][0]["Fn::ImportValue"]
    assert all("privateSubnet" in s["Fn::ImportValue"] for s in vpc["SubnetIds"])


def _statements(template: dict, role_prefix: str) -> list[dict]:
    role_id, _ = _one(template, "AWS::IAM::Role", role_prefix)
    statements = []
    for policy in _resources(template, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def _actions(statement: dict) -> set[str]:
    actions = statement["Action"]
    return {actions} if isinstance(actions, str) else set(actions)


def test_item_gen_role_is_scoped(ingestion):
    topic_id, _ = _one(ingestion, "AWS::SNS::Topic", "ItemLoadTopic")
    queue_id, _ = _one(ingestion, "AWS::SQS::Queue", "ItemGenQueue")
    bucket_id, _ = _one(ingestion, "AWS::S3::Bucket", "PayloadBucket")
    logs_id, _ = _one(ingestion, "AWS::Logs::LogGroup", "ItemGenFunctionLogs")
    dlq_id, _ = _one(ingestion, "AWS::SQS::Queue", "ItemGenDeadLetterQueue")
    _, role = _one(ingestion, "AWS::IAM::Role", "ItemGenFunctionRole")
    assert "ManagedPolicyArns" not in role["Properties"]
    by_resource = {
        str(s["Resource"]): _actions(s) for s in _statements(ingestion, "ItemGenFunctionRole")
    }
    assert by_resource == {
        str({"Fn::GetAtt": [logs_id, "Arn"]}): {"logs:CreateLogStream", "logs:PutLogEvents"},
        str({"Ref": topic_id}): {"sns:Publish"},
        str({"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/*"]]}): {"s3:PutObject"},
        str({"Fn::GetAtt": [queue_id, "Arn"]}): {
            "sqs:ChangeMessageVisibility",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes",
            "sqs:GetQueueUrl",
            "sqs:ReceiveMessage",
        },
        str({"Fn::GetAtt": [dlq_id, "Arn"]}): {"sqs:SendMessage"},
    }


def test_item_load_role_is_scoped(ingestion):
    statements = _statements(ingestion, "ItemLoadFunctionRole")
    dlq_id, _ = _one(ingestion, "AWS::SQS::Queue", "ItemLoadDeadLetterQueue")
    sends = [s for s in statements if "sqs:SendMessage" in _actions(s)]
    assert sends == [
        {
            "Action": "sqs:SendMessage",
            "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [dlq_id, "Arn"]},
        }
    ]
    wildcard = [s for s in statements if s["Resource"] == "*"]
    assert len(wildcard) == 1 and all(a.startswith("ec2:") for a in _actions(wildcard[0]))
    secrets = [s for s in statements if any(a.startswith("secretsmanager:") for a in _actions(s))]
    assert len(secrets) == 1
    assert _actions(secrets[0]) == {
        "secretsmanager:GetSecretValue",
        "secretsmanager:DescribeSecret",
    }
    assert "IngestUserSecret" in secrets[0]["Resource"]["Fn::ImportValue"]
    s3 = [s for s in statements if any(a.startswith("s3:") for a in _actions(s))]
    assert [_actions(s) for s in s3] == [{"s3:GetObject"}]
    assert not any("s3:PutObject" in _actions(s) for s in statements)
    # it publishes only to the post-ingest topic: never back to a stage's topic
    post_ingest, _ = _one(ingestion, "AWS::SNS::Topic", "PostIngestTopic")
    publishes = [s for s in statements if "sns:Publish" in _actions(s)]
    assert [s["Resource"] for s in publishes] == [{"Ref": post_ingest}]


def test_payload_bucket_is_private_encrypted_and_expires(ingestion):
    _, bucket = _one(ingestion, "AWS::S3::Bucket", "PayloadBucket")
    props = bucket["Properties"]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
        "ServerSideEncryptionByDefault"
    ] == {"SSEAlgorithm": "AES256"}
    assert {"ExpirationInDays": 7, "Status": "Enabled"}.items() <= props["LifecycleConfiguration"][
        "Rules"
    ][0].items()


def test_alarms_on_dlqs_and_queue_age(ingestion):
    alarm_topic, _ = _one(ingestion, "AWS::SNS::Topic", "AlarmTopic")
    alarms = _resources(ingestion, "AWS::CloudWatch::Alarm")
    summary = {}
    for alarm in alarms.values():
        props = alarm["Properties"]
        assert props["AlarmActions"] == [{"Ref": alarm_topic}]
        queue = props["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        summary[queue] = (props["MetricName"], props["ComparisonOperator"], props["Threshold"])
    assert summary == {
        key: value
        for key, value in summary.items()
        if any(key.startswith(p) for p in ("ItemGen", "ItemLoad"))
    }
    by_kind = sorted(
        (k.split("Queue")[0].replace("DeadLetter", "DLQ"), v) for k, v in summary.items()
    )
    assert by_kind == [
        ("ItemGen", ("ApproximateAgeOfOldestMessage", "GreaterThanThreshold", 3600)),
        ("ItemGenDLQ", ("ApproximateNumberOfMessagesVisible", "GreaterThanOrEqualToThreshold", 1)),
        ("ItemLoad", ("ApproximateAgeOfOldestMessage", "GreaterThanThreshold", 3600)),
        ("ItemLoadDLQ", ("ApproximateNumberOfMessagesVisible", "GreaterThanOrEqualToThreshold", 1)),
    ]


def test_topics_and_queues_require_tls(ingestion):
    for type_ in ("AWS::SNS::TopicPolicy", "AWS::SQS::QueuePolicy"):
        for policy in _resources(ingestion, type_).values():
            statements = policy["Properties"]["PolicyDocument"]["Statement"]
            assert any(
                s["Effect"] == "Deny"
                and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
                for s in statements
            )


def test_optional_email_subscription(default_app, full_app):
    def emails(app):
        return [
            s["Properties"]["Endpoint"]
            for s in _resources(app.templates["ingestion"], "AWS::SNS::Subscription").values()
            if s["Properties"]["Protocol"] == "email"
        ]

    assert emails(default_app) == []
    assert emails(full_app) == ["ops@example.com"]


def test_s3_event_sources_reach_load_topic(full_app):
    template = full_app.templates["ingestion"]
    topic_id, _ = _one(template, "AWS::SNS::Topic", "ItemLoadTopic")
    (notifications,) = _resources(template, "Custom::S3BucketNotifications").values()
    props = notifications["Properties"]
    assert props["BucketName"] == "stac-landing"
    assert props["Managed"] is False  # existing notifications on the bucket are kept
    configs = props["NotificationConfiguration"]["TopicConfigurations"]
    assert sorted(c["Filter"]["Key"]["FilterRules"][0]["Value"] for c in configs) == [
        ".geojson",
        ".json",
        ".ndjson",
    ]
    assert all(c["Events"] == ["s3:ObjectCreated:*"] for c in configs)
    assert all(c["TopicArn"] == {"Ref": topic_id} for c in configs)
    (readable,) = [
        s["Resource"]
        for s in _statements(template, "ItemLoadFunctionRole")
        if _actions(s) == {"s3:GetObject"}
    ]
    assert {
        "Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":s3:::stac-landing/*"]]
    } in readable
    assert {
        "Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":s3:::stac-archive/*"]]
    } in readable


def test_item_gen_reads_configured_buckets(full_app):
    """item_gen.readable_buckets: GetObject on their objects, ListBucket on the buckets."""
    template = full_app.templates["ingestion"]
    statements = _statements(template, "ItemGenFunctionRole")
    reads = [s for s in statements if _actions(s) & {"s3:GetObject", "s3:ListBucket"}]

    def arn(suffix: str) -> dict:
        return {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, f":s3:::{suffix}"]]}

    assert reads == [
        {"Action": "s3:GetObject", "Effect": "Allow", "Resource": arn("my-bucket/*")},
        {"Action": "s3:ListBucket", "Effect": "Allow", "Resource": arn("my-bucket")},
    ]


def test_item_gen_reads_no_bucket_by_default(ingestion):
    statements = _statements(ingestion, "ItemGenFunctionRole")
    assert not [s for s in statements if _actions(s) & {"s3:GetObject", "s3:ListBucket"}]


def test_stage_settings_reach_function_environments(full_app):
    template = full_app.templates["ingestion"]
    _, gen = _one(template, "AWS::Lambda::Function", "ItemGenFunction")
    _, load = _one(template, "AWS::Lambda::Function", "ItemLoadFunction")
    gen_env = gen["Properties"]["Environment"]["Variables"]
    load_env = load["Properties"]["Environment"]["Variables"]
    assert (
        gen_env["WARM_RUNNER"],
        gen_env["WARM_WORKERS_PER_ENV"],
        gen_env["WARM_MAX_ENVIRONMENTS"],
    ) == ("false", "3", "2")
    assert load_env["HREF_SCHEMES"] == "s3"


def test_log_retention_from_config(default_app, full_app):
    def retention(app, prefix: str) -> int:
        _, group = _one(app.templates["ingestion"], "AWS::Logs::LogGroup", prefix)
        return group["Properties"]["RetentionInDays"]

    assert retention(default_app, "ItemGenFunctionLogs") == 30
    assert retention(default_app, "ItemLoadFunctionLogs") == 30
    assert retention(full_app, "ItemLoadFunctionLogs") == 400


def test_a_schedule_sends_item_load_its_maintenance_event(ingestion):
    # GIVEN the default deployment: batches skip partition stats refreshes for an interval
    from item_load.maintenance import MAINTENANCE_EVENT, is_maintenance

    function_id, _ = _one(ingestion, "AWS::Lambda::Function", "ItemLoadFunction")
    # THEN one rule invokes ItemLoad every 5 minutes with the event its handler recognises
    _, rule = _one(ingestion, "AWS::Events::Rule", "ItemLoadMaintenance")
    props = rule["Properties"]
    assert props["ScheduleExpression"] == "rate(5 minutes)"
    (target,) = props["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [function_id, "Arn"]}
    assert json.loads(target["Input"]) == MAINTENANCE_EVENT
    assert is_maintenance(json.loads(target["Input"]))
    # AND EventBridge may invoke it
    _, permission = _one(ingestion, "AWS::Lambda::Permission", "ItemLoadMaintenanceAllowEventRule")
    assert permission["Properties"]["Principal"] == "events.amazonaws.com"


def test_the_maintenance_schedule_follows_config(full_app):
    # GIVEN item_load.maintenance_interval_minutes: 10
    _, rule = _one(full_app.templates["ingestion"], "AWS::Events::Rule", "ItemLoadMaintenance")
    # THEN the rule runs every 10 minutes
    assert rule["Properties"]["ScheduleExpression"] == "rate(10 minutes)"


def test_item_load_publishes_post_ingest_notifications_to_its_own_topic(ingestion):
    # GIVEN the default deployment: notifications on
    topic_id, _ = _one(ingestion, "AWS::SNS::Topic", "PostIngestTopic")
    _, function = _one(ingestion, "AWS::Lambda::Function", "ItemLoadFunction")
    # THEN ItemLoad is told the topic, may publish to it, and the output names it
    variables = function["Properties"]["Environment"]["Variables"]
    assert variables["POST_INGEST_TOPIC_ARN"] == {"Ref": topic_id}
    assert any(
        "sns:Publish" in _actions(s) and s["Resource"] == {"Ref": topic_id}
        for s in _statements(ingestion, "ItemLoadFunctionRole")
    )
    assert ingestion["Outputs"]["PostIngestTopicArn"]["Value"] == {"Ref": topic_id}
    # AND the topic refuses publishes that are not over TLS (as the stage topics do)
    policies = _resources(ingestion, "AWS::SNS::TopicPolicy").values()
    assert any(
        {"Ref": topic_id} in p["Properties"]["Topics"]
        and any(st["Effect"] == "Deny" for st in p["Properties"]["PolicyDocument"]["Statement"])
        for p in policies
    )


def test_post_ingest_notifications_can_be_turned_off(tmp_path_factory, synth):
    app = synth(
        tmp_path_factory.mktemp("cdk-quiet"), item_load={"post_ingest_notifications": False}
    )
    template = app.templates["ingestion"]
    assert not [k for k in _resources(template, "AWS::SNS::Topic") if k.startswith("PostIngest")]
    _, function = _one(template, "AWS::Lambda::Function", "ItemLoadFunction")
    assert "POST_INGEST_TOPIC_ARN" not in function["Properties"]["Environment"]["Variables"]
    assert "PostIngestTopicArn" not in template["Outputs"]


def test_the_ingest_api_requires_sigv4_and_reaches_its_lambda(ingestion):
    # GIVEN the default deployment: the ingest API is on
    api_id, api = _one(ingestion, "AWS::ApiGatewayV2::Api", "IngestApi")
    assert api["Properties"]["ProtocolType"] == "HTTP"
    # THEN every route needs IAM (SigV4) auth and goes to the ingest API Lambda
    routes = [
        r
        for r in _resources(ingestion, "AWS::ApiGatewayV2::Route").values()
        if r["Properties"]["ApiId"] == {"Ref": api_id}
    ]
    assert routes and all(r["Properties"]["AuthorizationType"] == "AWS_IAM" for r in routes)
    function_id, function = _one(ingestion, "AWS::Lambda::Function", "IngestApiFunction")
    [integration] = [
        i
        for i in _resources(ingestion, "AWS::ApiGatewayV2::Integration").values()
        if i["Properties"]["ApiId"] == {"Ref": api_id}
    ]
    assert integration["Properties"]["IntegrationUri"] == {"Fn::GetAtt": [function_id, "Arn"]}
    # AND the Lambda sits in the VPC with the database client group, told the topics and secret
    props = function["Properties"]
    assert (
        "DatabaseClientSecurityGroup"
        in props["VpcConfig"]["SecurityGroupIds"][0]["Fn::ImportValue"]
    )
    variables = props["Environment"]["Variables"]
    gen_topic, _ = _one(ingestion, "AWS::SNS::Topic", "ItemGenTopic")
    load_topic, _ = _one(ingestion, "AWS::SNS::Topic", "ItemLoadTopic")
    assert variables["ITEM_GEN_TOPIC_ARN"] == {"Ref": gen_topic}
    assert variables["ITEM_LOAD_TOPIC_ARN"] == {"Ref": load_topic}
    assert "IngestUserSecret" in variables["PGSTAC_SECRET_ARN"]["Fn::ImportValue"]
    # AND its role may publish to exactly the two stage topics
    statements = _statements(ingestion, "IngestApiFunctionRole")
    published = [s["Resource"] for s in statements if "sns:Publish" in _actions(s)]
    resources = [r for group in published for r in (group if isinstance(group, list) else [group])]
    assert sorted(r["Ref"] for r in resources) == sorted([gen_topic, load_topic])
    # AND the stage logs each call, and the output names the URL
    [stage] = [
        s
        for s in _resources(ingestion, "AWS::ApiGatewayV2::Stage").values()
        if s["Properties"]["ApiId"] == {"Ref": api_id}
    ]
    assert "$context.identity.userArn" in stage["Properties"]["AccessLogSettings"]["Format"]
    url = ingestion["Outputs"]["IngestApiUrl"]["Value"]
    assert api_id in json.dumps(url)


def test_the_ingest_api_can_be_turned_off(tmp_path_factory, synth):
    app = synth(tmp_path_factory.mktemp("cdk-no-api"), ingest_api={"enabled": False})
    template = app.templates["ingestion"]
    assert not _resources(template, "AWS::ApiGatewayV2::Api")
    assert "IngestApiUrl" not in template["Outputs"]
