# ECS Fargate service for Hearth: image in a private ECR repository, secrets from Secrets
# Manager, read-only root filesystem, non-root user, logs to KMS-encrypted log groups,
# separate execution and task roles with least privilege.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.region
  mllp_ports = sort([for p in keys(var.mllp_target_group_arns) : tonumber(p)])

  # Prefix of repositories created by the pull-through cache for public.ecr.aws.
  ecr_public_prefix  = "${var.name}-ecr-public"
  metrics_agent_repo = "${local.ecr_public_prefix}/cloudwatch-agent/cloudwatch-agent"
}

# --- Image registry --------------------------------------------------------------------------

resource "aws_ecr_repository" "hearth" {
  name                 = "${var.name}/hearth"
  image_tag_mutability = "IMMUTABLE"

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = var.storage_kms_key_arn
  }
}

resource "aws_ecr_lifecycle_policy" "hearth" {
  repository = aws_ecr_repository.hearth.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Keep the 50 most recent images"
      selection = {
        tagStatus   = "any"
        countType   = "imageCountMoreThan"
        countNumber = 50
      }
      action = { type = "expire" }
    }]
  })
}

# The tasks have no route to public registries' storage through the VPC endpoints; ECR
# fetches the CloudWatch agent image from ECR Public on first pull and keeps a copy.
resource "aws_ecr_pull_through_cache_rule" "ecr_public" {
  count = var.enable_metrics_agent ? 1 : 0

  ecr_repository_prefix = local.ecr_public_prefix
  upstream_registry_url = "public.ecr.aws"
}

resource "aws_ecr_repository_creation_template" "ecr_public" {
  count = var.enable_metrics_agent ? 1 : 0

  prefix               = local.ecr_public_prefix
  description          = "Cached ECR Public images of ${var.name}"
  applied_for          = ["PULL_THROUGH_CACHE"]
  image_tag_mutability = "MUTABLE"

  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = var.storage_kms_key_arn
  }
}

# --- Logs ------------------------------------------------------------------------------------

resource "aws_cloudwatch_log_group" "app" {
  name              = "/hearth/${var.name}/app"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
}

resource "aws_cloudwatch_log_group" "metrics" {
  name              = "/hearth/${var.name}/metrics"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
}

resource "aws_cloudwatch_log_group" "exec" {
  name              = "/hearth/${var.name}/ecs-exec"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.logs_kms_key_arn
}

# --- Secrets ---------------------------------------------------------------------------------

resource "aws_secretsmanager_secret" "hearth" {
  #checkov:skip=CKV2_AWS_57:The values are PostgreSQL URLs of roles the operator creates and Hearth's session-sealing key; rotating them needs a coordinated role-password change and restart (runbook in docs/deploy.md), not a generic rotation Lambda. The RDS master secret is rotated by RDS.
  for_each = toset(var.secret_names)

  name                    = "${var.name}/${each.value}"
  description             = "Hearth ${var.name}: value of ${each.value} (put by the operator)"
  kms_key_id              = var.database_kms_key_arn
  recovery_window_in_days = 30
}

# --- Cluster ---------------------------------------------------------------------------------

resource "aws_ecs_cluster" "this" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = "enabled"
  }

  configuration {
    execute_command_configuration {
      kms_key_id = var.logs_kms_key_arn
      logging    = "OVERRIDE"

      log_configuration {
        cloud_watch_encryption_enabled = true
        cloud_watch_log_group_name     = aws_cloudwatch_log_group.exec.name
      }
    }
  }
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name       = aws_ecs_cluster.this.name
  capacity_providers = ["FARGATE"]

  default_capacity_provider_strategy {
    capacity_provider = "FARGATE"
    weight            = 1
  }
}

# --- Network ---------------------------------------------------------------------------------

resource "aws_security_group" "task" {
  name        = "${var.name}-task"
  description = "Hearth tasks: HTTP from the ALB, MLLP from the NLB; out to HTTPS and PostgreSQL"
  vpc_id      = var.vpc_id

  tags = { Name = "${var.name}-task" }
}

resource "aws_vpc_security_group_ingress_rule" "task_http_from_alb" {
  security_group_id            = aws_security_group.task.id
  description                  = "Hearth HTTP from the ALB"
  ip_protocol                  = "tcp"
  from_port                    = var.app_port
  to_port                      = var.app_port
  referenced_security_group_id = var.alb_security_group_id
}

resource "aws_vpc_security_group_ingress_rule" "task_mllp_from_nlb" {
  for_each = toset([for p in local.mllp_ports : tostring(p)])

  security_group_id            = aws_security_group.task.id
  description                  = "MLLP port ${each.value} from the NLB"
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.value)
  to_port                      = tonumber(each.value)
  referenced_security_group_id = var.nlb_security_group_id
}

# EHR FHIR and OAuth endpoints, identity providers' JWKS, partners' JWKS URLs and the AWS
# APIs (through the VPC endpoints) are all HTTPS.
resource "aws_vpc_security_group_egress_rule" "task_https" {
  security_group_id = aws_security_group.task.id
  description       = "HTTPS to EHRs, identity providers and AWS endpoints"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "task_postgres" {
  security_group_id = aws_security_group.task.id
  description       = "PostgreSQL inside the VPC"
  ip_protocol       = "tcp"
  from_port         = 5432
  to_port           = 5432
  cidr_ipv4         = var.vpc_cidr_block
}

# --- IAM: execution role (used by ECS to start the task) -------------------------------------

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:ecs:${local.region}:${local.account_id}:*"]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-task-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "EcrAuth"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid     = "PullImages"
    actions = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    resources = [
      aws_ecr_repository.hearth.arn,
      "arn:${local.partition}:ecr:${local.region}:${local.account_id}:repository/${local.ecr_public_prefix}/*",
    ]
  }

  statement {
    sid       = "PullThroughCache"
    actions   = ["ecr:BatchImportUpstreamImage", "ecr:CreateRepository"]
    resources = ["arn:${local.partition}:ecr:${local.region}:${local.account_id}:repository/${local.ecr_public_prefix}/*"]
  }

  statement {
    sid       = "WriteContainerLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.app.arn}:*", "${aws_cloudwatch_log_group.metrics.arn}:*"]
  }

  statement {
    sid       = "ReadHearthSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [for s in aws_secretsmanager_secret.hearth : s.arn]
  }

  statement {
    sid       = "DecryptSecretsAndImages"
    actions   = ["kms:Decrypt"]
    resources = [var.database_kms_key_arn, var.storage_kms_key_arn]
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "start-hearth-tasks"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# --- IAM: task role (used by Hearth and the metrics agent at run time) ----------------------

resource "aws_iam_role" "task" {
  name               = "${var.name}-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

data "aws_iam_policy_document" "task" {
  statement {
    sid       = "ExportsBucketList"
    actions   = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [var.exports_bucket_arn, var.audit_bucket_arn]
  }

  statement {
    sid       = "ExportsObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${var.exports_bucket_arn}/*"]
  }

  # The audit archive is write-once: no delete, no retention changes.
  statement {
    sid       = "AuditArchiveObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"]
    resources = ["${var.audit_bucket_arn}/*"]
  }

  statement {
    sid       = "BucketKeys"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [var.storage_kms_key_arn, var.audit_kms_key_arn]
  }

  dynamic "statement" {
    for_each = length(var.bedrock_model_arns) > 0 ? [1] : []
    content {
      sid       = "InvokeConfiguredModels"
      actions   = ["bedrock:InvokeModel", "bedrock:InvokeModelWithResponseStream"]
      resources = var.bedrock_model_arns
    }
  }

  dynamic "statement" {
    for_each = var.enable_metrics_agent ? [1] : []
    content {
      sid       = "MetricsAgentEmfLogs"
      actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
      resources = [aws_cloudwatch_log_group.metrics.arn, "${aws_cloudwatch_log_group.metrics.arn}:*"]
    }
  }

  dynamic "statement" {
    for_each = var.enable_execute_command ? [1] : []
    content {
      sid = "EcsExecChannels"
      actions = [
        "ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel",
        "ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel",
      ]
      resources = ["*"]
    }
  }

  dynamic "statement" {
    for_each = var.enable_execute_command ? [1] : []
    content {
      sid       = "EcsExecLogs"
      actions   = ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogGroups"]
      resources = [aws_cloudwatch_log_group.exec.arn, "${aws_cloudwatch_log_group.exec.arn}:*"]
    }
  }
}

resource "aws_iam_role_policy" "task" {
  name   = "hearth-runtime"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}

# --- Task definition -------------------------------------------------------------------------

locals {
  hearth_environment = concat(
    [
      { name = "HEARTH_LISTEN", value = "0.0.0.0:${var.app_port}" },
      { name = "HEARTH_PUBLIC_BASE_URL", value = var.public_base_url },
      { name = "HEARTH_MODE", value = "production" },
      { name = "HEARTH_LOG", value = var.log_level },
      { name = "HEARTH_BULK_DIR", value = "/var/lib/hearth/bulk" },
    ],
    var.config_file_path == null ? [] : [{ name = "HEARTH_CONFIG", value = var.config_file_path }],
    var.bedrock_region == null ? [] : [{ name = "HEARTH_BEDROCK_REGION", value = var.bedrock_region }],
    [for k in sort(keys(var.extra_environment)) : { name = k, value = var.extra_environment[k] }],
  )

  hearth_secrets = [
    for n in sort(var.secret_names) : { name = n, valueFrom = aws_secretsmanager_secret.hearth[n].arn }
  ]

  hearth_container = {
    name                   = "hearth"
    image                  = "${aws_ecr_repository.hearth.repository_url}:${var.image_tag}"
    essential              = true
    user                   = "65532:65532"
    readonlyRootFilesystem = true
    privileged             = false
    stopTimeout            = 45
    portMappings = concat(
      [{ containerPort = var.app_port, protocol = "tcp", name = "http" }],
      [for p in local.mllp_ports : { containerPort = p, protocol = "tcp", name = "mllp-${p}" }],
    )
    environment = local.hearth_environment
    secrets     = local.hearth_secrets
    # The root filesystem is read-only: /tmp and /var/lib/hearth (bulk export files,
    # HEARTH_BULK_DIR) are the task's ephemeral storage, not shared between tasks.
    mountPoints = [
      { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false },
      { sourceVolume = "data", containerPath = "/var/lib/hearth", readOnly = false },
    ]
    ulimits = [{ name = "nofile", softLimit = 65536, hardLimit = 65536 }]
    linuxParameters = {
      capabilities = { drop = ["ALL"] }
    }
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.app.name
        awslogs-region        = local.region
        awslogs-stream-prefix = "hearth"
        mode                  = "non-blocking"
        max-buffer-size       = "8m"
      }
    }
  }

  # The agent scrapes Hearth's /metrics on localhost (the ALB never serves that path) and
  # writes embedded-metric-format records to its log group; CloudWatch extracts metrics.
  prometheus_config = yamlencode({
    global = { scrape_interval = "1m", scrape_timeout = "10s" }
    scrape_configs = [{
      job_name       = "hearth"
      metrics_path   = "/metrics"
      static_configs = [{ targets = ["localhost:${var.app_port}"] }]
    }]
  })

  agent_config = jsonencode({
    agent = { region = local.region }
    logs = {
      force_flush_interval = 15
      metrics_collected = {
        prometheus = {
          log_group_name         = aws_cloudwatch_log_group.metrics.name
          prometheus_config_path = "env:PROMETHEUS_CONFIG_CONTENT"
          emf_processor = {
            metric_namespace = var.metrics_namespace
            metric_declaration = [
              {
                source_labels    = ["job"]
                label_matcher    = "^hearth$"
                dimensions       = [["ack"]]
                metric_selectors = ["^hearth_hl7_messages_total$"]
              },
              {
                source_labels    = ["job"]
                label_matcher    = "^hearth$"
                dimensions       = [["endpoint", "reason"]]
                metric_selectors = ["^hearth_auth_failures_total$"]
              },
            ]
          }
        }
      }
    }
  })

  agent_container = {
    name                   = "metrics-agent"
    image                  = "${local.account_id}.dkr.ecr.${local.region}.amazonaws.com/${local.metrics_agent_repo}:${var.metrics_agent_image_tag}"
    essential              = false
    readonlyRootFilesystem = true
    privileged             = false
    environment = [
      { name = "CW_CONFIG_CONTENT", value = local.agent_config },
      { name = "PROMETHEUS_CONFIG_CONTENT", value = local.prometheus_config },
    ]
    mountPoints = [
      { sourceVolume = "agent-etc", containerPath = "/opt/aws/amazon-cloudwatch-agent/etc", readOnly = false },
      { sourceVolume = "agent-logs", containerPath = "/opt/aws/amazon-cloudwatch-agent/logs", readOnly = false },
      { sourceVolume = "agent-var", containerPath = "/opt/aws/amazon-cloudwatch-agent/var", readOnly = false },
      { sourceVolume = "agent-tmp", containerPath = "/tmp", readOnly = false },
    ]
    dependsOn = [{ containerName = "hearth", condition = "START" }]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.metrics.name
        awslogs-region        = local.region
        awslogs-stream-prefix = "agent"
      }
    }
  }

  containers = concat([local.hearth_container], var.enable_metrics_agent ? [local.agent_container] : [])
  volumes    = concat(["tmp", "data"], var.enable_metrics_agent ? ["agent-etc", "agent-logs", "agent-var", "agent-tmp"] : [])
}

resource "aws_ecs_task_definition" "hearth" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  container_definitions    = jsonencode(local.containers)

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  dynamic "volume" {
    for_each = toset(local.volumes)
    content {
      name = volume.value
    }
  }
}

# --- Service ---------------------------------------------------------------------------------

resource "aws_ecs_service" "hearth" {
  name                               = var.name
  cluster                            = aws_ecs_cluster.this.id
  task_definition                    = aws_ecs_task_definition.hearth.arn
  desired_count                      = var.desired_count
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  enable_execute_command             = var.enable_execute_command
  enable_ecs_managed_tags            = true
  propagate_tags                     = "SERVICE"
  health_check_grace_period_seconds  = 180
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  wait_for_steady_state              = false

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [aws_security_group.task.id]
    assign_public_ip = false
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  load_balancer {
    target_group_arn = var.app_target_group_arn
    container_name   = "hearth"
    container_port   = var.app_port
  }

  dynamic "load_balancer" {
    for_each = var.mllp_target_group_arns
    content {
      target_group_arn = load_balancer.value
      container_name   = "hearth"
      container_port   = tonumber(load_balancer.key)
    }
  }
}
