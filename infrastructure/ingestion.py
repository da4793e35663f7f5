"""The ingestion stack: topics, queues, DLQs and the two stage Lambdas, with alarms and outputs."""

from __future__ import annotations

import json

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Size, Stack, Tags
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_apigatewayv2_authorizers as apigw_authorizers
from aws_cdk import aws_apigatewayv2_integrations as apigw_integrations
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infrastructure.assets import stage_image
from infrastructure.config import DeploymentConfig, IngestApiConfig, _StageConfig
from infrastructure.database import DatabaseStack
from infrastructure.network import NetworkStack

DLQ_RETENTION = Duration.days(14)
S3_EVENT_SUFFIXES = (".json", ".geojson", ".ndjson")


class StageQueues(Construct):
    """An SNS topic feeding an SQS queue whose failures land in a dead-letter queue."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        stage: _StageConfig,
        raw_message_delivery: bool,
    ) -> None:
        super().__init__(scope, id)
        self.topic = sns.Topic(self, "Topic", enforce_ssl=True)
        self.dlq = sqs.Queue(
            self,
            "DeadLetterQueue",
            retention_period=DLQ_RETENTION,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            visibility_timeout=Duration.seconds(stage.queue_visibility_timeout_seconds),
            retention_period=DLQ_RETENTION,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            dead_letter_queue=sqs.DeadLetterQueue(
                max_receive_count=stage.max_receive_count, queue=self.dlq
            ),
        )
        self.topic.add_subscription(
            subscriptions.SqsSubscription(self.queue, raw_message_delivery=raw_message_delivery)
        )


class IngestionStack(Stack):
    """ItemGen and ItemLoad: SNS -> SQS (+DLQ) -> container Lambda, plus alarms and outputs."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: DeploymentConfig,
        network: NetworkStack,
        database: DatabaseStack,
        item_gen_code: lambda_.DockerImageCode | None = None,
        item_load_code: lambda_.DockerImageCode | None = None,
        ingest_api_code: lambda_.DockerImageCode | None = None,
        **kwargs,
    ) -> None:
        super().__init__(scope, id, **kwargs)
        architecture = (
            lambda_.Architecture.ARM_64
            if config.architecture == "arm64"
            else lambda_.Architecture.X86_64
        )

        # --- shared pieces -------------------------------------------------------------------
        self.payload_bucket = s3.Bucket(
            self,
            "PayloadBucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-payloads",
                    expiration=Duration.days(config.payload_bucket.expire_after_days),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
            ],
            # Payloads are transient copies of items already on their way to pgstac; keep the
            # bucket on stack deletion anyway so no in-flight pointer dangles.
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.alarm_topic = sns.Topic(self, "AlarmTopic", enforce_ssl=True)
        if config.alarms.email:
            self.alarm_topic.add_subscription(subscriptions.EmailSubscription(config.alarms.email))

        self.item_gen = StageQueues(
            self,
            "ItemGen",
            stage=config.item_gen,
            raw_message_delivery=config.raw_message_delivery,
        )
        self.item_load = StageQueues(
            self,
            "ItemLoad",
            stage=config.item_load,
            raw_message_delivery=config.raw_message_delivery,
        )

        common_env = {
            "LOG_LEVEL": config.log_level,
            "POWERTOOLS_METRICS_NAMESPACE": config.project_name,
        }

        # --- ItemGen -------------------------------------------------------------------------
        gen = config.item_gen
        item_gen_code = item_gen_code or stage_image(
            "infrastructure/item_gen.Dockerfile",
            config.architecture,
            build_args={
                "PREBAKED_PACKAGES": json.dumps([p.model_dump() for p in gen.prebaked_packages])
            },
        )
        self.item_gen_function = self._function(
            "ItemGenFunction",
            stage=gen,
            code=item_gen_code,
            architecture=architecture,
            environment={
                **common_env,
                "POWERTOOLS_SERVICE_NAME": "item-gen",
                "ITEM_LOAD_TOPIC_ARN": self.item_load.topic.topic_arn,
                "PAYLOAD_BUCKET": self.payload_bucket.bucket_name,
                "REQUEST_TIMEOUT_SECONDS": str(gen.request_timeout_seconds),
                "DEAD_LETTER_QUEUE_URL": self.item_gen.dlq.queue_url,
                "WARM_RUNNER": str(gen.warm_runner).lower(),
                "WARM_WORKERS_PER_ENV": str(gen.warm_workers_per_env),
                "WARM_MAX_ENVIRONMENTS": str(gen.warm_max_environments),
                # ItemGen reports to the ledger exactly when ItemLoad keeps one.
                "LEDGER": str(config.item_load.ledger).lower(),
                "MAX_RECEIVES": str(gen.max_receive_count),
            },
        )
        self._dead_letters(self.item_gen_function, self.item_gen.dlq)
        self.item_load.topic.grant_publish(self.item_gen_function)
        self.item_gen_function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject"],
                resources=[self.payload_bucket.arn_for_objects("*")],
            )
        )
        if gen.readable_buckets:
            # Requests name inputs like s3://bucket/key; some stactools packages list prefixes.
            self.item_gen_function.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["s3:GetObject"],
                    resources=[f"arn:{self.partition}:s3:::{b}/*" for b in gen.readable_buckets],
                )
            )
            self.item_gen_function.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["s3:ListBucket"],
                    resources=[f"arn:{self.partition}:s3:::{b}" for b in gen.readable_buckets],
                )
            )
        self._consume(self.item_gen_function, self.item_gen.queue, gen)

        # --- ItemLoad ------------------------------------------------------------------------
        load = config.item_load
        # What ItemLoad created or changed, for anyone to subscribe to (item_load/notify.py).
        self.post_ingest_topic = (
            sns.Topic(self, "PostIngestTopic", enforce_ssl=True)
            if load.post_ingest_notifications
            else None
        )
        post_ingest_env = (
            {"POST_INGEST_TOPIC_ARN": self.post_ingest_topic.topic_arn}
            if self.post_ingest_topic is not None
            else {}
        )
        item_load_code = item_load_code or stage_image(
            "infrastructure/item_load.Dockerfile", config.architecture
        )
        self.item_load_function = self._function(
            "ItemLoadFunction",
            stage=load,
            code=item_load_code,
            architecture=architecture,
            environment={
                **common_env,
                "POWERTOOLS_SERVICE_NAME": "item-load",
                "PGSTAC_SECRET_ARN": database.ingest_secret.secret_arn,
                "CREATE_COLLECTIONS_IF_MISSING": str(load.create_collections_if_missing).lower(),
                "PARTITION_STATS_INTERVAL_SECONDS": str(load.partition_stats_interval_seconds),
                "TOAST_COMPRESSION": load.toast_compression,
                "DEAD_LETTER_QUEUE_URL": self.item_load.dlq.queue_url,
                "HREF_SCHEMES": ",".join(load.href_schemes),
                "HREF_MAX_BYTES": str(load.href_max_bytes),
                "HREF_TIMEOUT_SECONDS": str(load.href_timeout_seconds),
                "LEDGER": str(load.ledger).lower(),
                "LEDGER_RETENTION_DAYS": str(load.ledger_retention_days),
                "MAX_RECEIVES": str(load.max_receive_count),
                **post_ingest_env,
            },
            vpc=network.vpc,
            vpc_subnets=network.lambda_subnets,
            security_groups=[database.client_security_group],
        )
        self._dead_letters(self.item_load_function, self.item_load.dlq)
        if self.post_ingest_topic is not None:
            self.post_ingest_topic.grant_publish(self.item_load_function)
        database.ingest_secret.grant_read(self.item_load_function)
        readable = [self.payload_bucket.arn_for_objects("*")] + [
            f"arn:{self.partition}:s3:::{name}/*"
            for name in dict.fromkeys([*load.s3_event_buckets, *load.readable_buckets])
        ]
        self.item_load_function.add_to_role_policy(
            iam.PolicyStatement(actions=["s3:GetObject"], resources=readable)
        )
        self._consume(self.item_load_function, self.item_load.queue, load)
        # Partition stats that batches skipped are refreshed even when no batch comes again
        # (item_load/maintenance.py; the event must equal its MAINTENANCE_EVENT).
        events.Rule(
            self,
            "ItemLoadMaintenance",
            schedule=events.Schedule.rate(Duration.minutes(load.maintenance_interval_minutes)),
            targets=[
                targets.LambdaFunction(
                    self.item_load_function,
                    event=events.RuleTargetInput.from_object(
                        {"maintenance": "refresh-partition-stats"}
                    ),
                    retry_attempts=0,  # the next tick does the same work
                )
            ],
        )

        for name in load.s3_event_buckets:
            bucket = s3.Bucket.from_bucket_name(self, f"EventSource-{name}", name)
            for suffix in S3_EVENT_SUFFIXES:
                bucket.add_event_notification(
                    s3.EventType.OBJECT_CREATED,
                    s3n.SnsDestination(self.item_load.topic),
                    s3.NotificationKeyFilter(suffix=suffix),
                )

        # --- alarms --------------------------------------------------------------------------
        action = cloudwatch_actions.SnsAction(self.alarm_topic)
        for stage_id, queues in (("ItemGen", self.item_gen), ("ItemLoad", self.item_load)):
            dlq_alarm = queues.dlq.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(1), statistic="Maximum"
            ).create_alarm(
                self,
                f"{stage_id}DLQNotEmpty",
                alarm_description=f"{stage_id} dead-letter queue holds messages: inspect, fix, "
                "redrive",
                threshold=1,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            age_alarm = queues.queue.metric_approximate_age_of_oldest_message(
                period=Duration.minutes(5), statistic="Maximum"
            ).create_alarm(
                self,
                f"{stage_id}QueueAge",
                alarm_description=f"{stage_id} queue's oldest message is older than "
                f"{config.alarms.queue_age_threshold_seconds} s: the stage is stuck or too slow",
                threshold=config.alarms.queue_age_threshold_seconds,
                evaluation_periods=3,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            for alarm in (dlq_alarm, age_alarm):
                alarm.add_alarm_action(action)
                alarm.add_ok_action(action)

        # --- outputs (stable names: the stactools-ingest CLI and the docs read them) ----------
        outputs = {
            "ItemGenSNSTopicArn": self.item_gen.topic.topic_arn,
            "ItemGenQueueUrl": self.item_gen.queue.queue_url,
            "ItemGenDLQUrl": self.item_gen.dlq.queue_url,
            "ItemGenFunctionName": self.item_gen_function.function_name,
            "ItemLoadTopicArn": self.item_load.topic.topic_arn,
            "ItemLoadQueueUrl": self.item_load.queue.queue_url,
            "ItemLoadDLQUrl": self.item_load.dlq.queue_url,
            "ItemLoadFunctionName": self.item_load_function.function_name,
            "PgstacSecret": database.pgstac_secret.secret_arn,
            "PgstacIngestSecret": database.ingest_secret.secret_arn,
            "ItemGenLogGroup": self.item_gen_function.log_group.log_group_name,
            "ItemLoadLogGroup": self.item_load_function.log_group.log_group_name,
            "PayloadBucketName": self.payload_bucket.bucket_name,
            "AlarmTopicArn": self.alarm_topic.topic_arn,
        }
        if self.post_ingest_topic is not None:
            outputs["PostIngestTopicArn"] = self.post_ingest_topic.topic_arn
        if config.ingest_api.enabled:
            outputs["IngestApiUrl"] = self._ingest_api(
                config, network, database, architecture, ingest_api_code
            )
        for name, value in outputs.items():
            CfnOutput(self, name, value=value)
        Tags.of(self).add("project", config.project_name)

    def _ingest_api(
        self,
        config: DeploymentConfig,
        network: NetworkStack,
        database: DatabaseStack,
        architecture: lambda_.Architecture,
        code: lambda_.DockerImageCode | None,
    ) -> str:
        """API Gateway (HTTP API) with IAM auth in front of the ingest API Lambda; its URL.

        The Lambda runs in the VPC beside ItemLoad: it reads the ledger with the ingest user's
        secret and publishes what is posted to the stages' topics (ingest_api/handler.py).
        """
        api_config = config.ingest_api
        function = self._function(
            "IngestApiFunction",
            stage=api_config,
            code=code or stage_image("infrastructure/ingest_api.Dockerfile", config.architecture),
            architecture=architecture,
            environment={
                "LOG_LEVEL": config.log_level,
                "POWERTOOLS_SERVICE_NAME": "ingest-api",
                "PGSTAC_SECRET_ARN": database.ingest_secret.secret_arn,
                "ITEM_GEN_TOPIC_ARN": self.item_gen.topic.topic_arn,
                "ITEM_LOAD_TOPIC_ARN": self.item_load.topic.topic_arn,
                "PAYLOAD_BUCKET": self.payload_bucket.bucket_name,
            },
            vpc=network.vpc,
            vpc_subnets=network.lambda_subnets,
            security_groups=[database.client_security_group],
        )
        database.ingest_secret.grant_read(function)
        self.item_gen.topic.grant_publish(function)
        self.item_load.topic.grant_publish(function)
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject"], resources=[self.payload_bucket.arn_for_objects("*")]
            )
        )
        self.ingest_api = apigw.HttpApi(
            self,
            "IngestApi",
            description="stactools-ingest: post requests, ask the ledger (IAM/SigV4 auth)",
            default_authorizer=apigw_authorizers.HttpIamAuthorizer(),
            default_integration=apigw_integrations.HttpLambdaIntegration(
                "IngestApiIntegration", function
            ),
        )
        access_log = logs.LogGroup(self, "IngestApiAccessLog", removal_policy=RemovalPolicy.DESTROY)
        cfn_access_log = access_log.node.default_child
        assert isinstance(cfn_access_log, logs.CfnLogGroup)
        cfn_access_log.retention_in_days = api_config.log_retention_days
        stage = self.ingest_api.default_stage
        assert stage is not None
        cfn_stage = stage.node.default_child
        assert isinstance(cfn_stage, apigw.CfnStage)
        cfn_stage.access_log_settings = apigw.CfnStage.AccessLogSettingsProperty(
            destination_arn=access_log.log_group_arn,
            format=json.dumps(
                {
                    "requestId": "$context.requestId",
                    "caller": "$context.identity.userArn",
                    "method": "$context.httpMethod",
                    "path": "$context.path",
                    "status": "$context.status",
                    "latency": "$context.responseLatency",
                }
            ),
        )
        return self.ingest_api.api_endpoint + "/"

    def _function(
        self,
        id: str,
        *,
        stage: _StageConfig | IngestApiConfig,
        code: lambda_.DockerImageCode,
        architecture: lambda_.Architecture,
        environment: dict[str, str],
        **kwargs,
    ) -> lambda_.DockerImageFunction:
        """A container Lambda with its own log group and a role that can write only there."""
        log_group = logs.LogGroup(
            self,
            f"{id}Logs",
            removal_policy=RemovalPolicy.DESTROY,
        )
        # The days themselves, not a RetentionDays member: config.py holds the one list of
        # periods CloudWatch accepts and has validated this value against it.
        cfn_log_group = log_group.node.default_child
        assert isinstance(cfn_log_group, logs.CfnLogGroup)
        cfn_log_group.retention_in_days = stage.log_retention_days
        role = iam.Role(
            self,
            f"{id}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"{id}: its queue, its log group, and what the stage publishes or reads",
        )
        log_group.grant_write(role)
        if "vpc" in kwargs:
            role.add_to_policy(
                iam.PolicyStatement(
                    # Lambda manages the function's network interfaces with these; they do not
                    # support resource-level permissions.
                    actions=[
                        "ec2:CreateNetworkInterface",
                        "ec2:DescribeNetworkInterfaces",
                        "ec2:DescribeSubnets",
                        "ec2:DeleteNetworkInterface",
                        "ec2:AssignPrivateIpAddresses",
                        "ec2:UnassignPrivateIpAddresses",
                    ],
                    resources=["*"],
                )
            )
        return lambda_.DockerImageFunction(
            self,
            id,
            code=code,
            architecture=architecture,
            memory_size=stage.memory_mb,
            timeout=Duration.seconds(stage.timeout_seconds),
            ephemeral_storage_size=Size.mebibytes(stage.ephemeral_storage_mb),
            reserved_concurrent_executions=stage.reserved_concurrency,
            environment=environment,
            log_group=log_group,
            role=role,
            **kwargs,
        )

    def _dead_letters(self, function: lambda_.IFunction, dlq: sqs.IQueue) -> None:
        """Let the stage send a record that can never succeed straight to its own DLQ."""
        # Not dlq.grant_send_messages: that also grants GetQueueAttributes/GetQueueUrl.
        function.add_to_role_policy(
            iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[dlq.queue_arn])
        )

    def _consume(self, function: lambda_.IFunction, queue: sqs.IQueue, stage: _StageConfig) -> None:
        """Wire the queue to the function with partial batch responses."""
        function.add_event_source(
            event_sources.SqsEventSource(
                queue,
                batch_size=stage.batch_size,
                max_batching_window=Duration.seconds(stage.max_batching_window_seconds)
                if stage.max_batching_window_seconds
                else None,
                max_concurrency=stage.max_concurrency,
                report_batch_item_failures=True,
            )
        )
