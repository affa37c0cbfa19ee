variable "name" {
  description = "Name prefix for every resource of this deployment; also the ECS cluster and service name."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the tasks."
  type        = string
}

variable "vpc_cidr_block" {
  description = "CIDR of the VPC (the database is reached inside it)."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the tasks (no public IPs are ever assigned)."
  type        = list(string)
}

variable "alb_security_group_id" {
  description = "Security group of the ALB: the only source allowed on the HTTP port."
  type        = string
}

variable "nlb_security_group_id" {
  description = "Security group of the MLLP NLB: the only source allowed on the MLLP ports."
  type        = string
}

variable "app_target_group_arn" {
  description = "ALB target group of the HTTP port."
  type        = string
}

variable "mllp_target_group_arns" {
  description = "NLB target group per MLLP port (keys are the ports as strings). Each port must match a [[mllp.listeners]] entry of Hearth's config file."
  type        = map(string)
  default     = {}
}

variable "app_port" {
  description = "Port of Hearth's HTTP server in the task (HEARTH_LISTEN=0.0.0.0:{port})."
  type        = number
  default     = 8080
}

variable "public_base_url" {
  description = "HEARTH_PUBLIC_BASE_URL: the https origin EHRs and browsers use (FHIR base = {this}/fhir/{tenant})."
  type        = string
}

variable "image_tag" {
  description = "Tag of the Hearth image in this deployment's ECR repository (tags are immutable: use the release version or the git SHA)."
  type        = string
}

variable "config_file_path" {
  description = "HEARTH_CONFIG: path of a hearth.toml baked into a derived image (needed for [[mllp.listeners]], which exist only in the file). null = no file, environment only."
  type        = string
  default     = null
}

variable "cpu" {
  description = "Fargate task CPU units (1024 = 1 vCPU)."
  type        = number
  default     = 1024
}

variable "memory" {
  description = "Fargate task memory in MiB."
  type        = number
  default     = 2048
}

variable "cpu_architecture" {
  description = "CPU architecture of the image: X86_64 or ARM64."
  type        = string
  default     = "X86_64"
}

variable "desired_count" {
  description = "Number of Hearth tasks. Use 0 until the image is pushed and the secrets have values."
  type        = number
  default     = 2
}

variable "enable_execute_command" {
  description = "ECS Exec (a shell into running tasks). Off by default: the image has no shell, and one-off commands run as separate tasks."
  type        = bool
  default     = false
}

variable "log_level" {
  description = "HEARTH_LOG: the tracing filter of Hearth's JSON logs."
  type        = string
  default     = "info,sqlx=warn"
}

variable "extra_environment" {
  description = "Further non-secret environment variables for Hearth (e.g. HEARTH_APP_IDLE_TIMEOUT_SECS). Names containing URL, KEY, SECRET, PASSWORD or TOKEN are refused: put those in secret_names."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.extra_environment) : length(regexall("(URL|KEY|SECRET|PASSWORD|TOKEN)", upper(k))) == 0])
    error_message = "extra_environment may not carry secrets (URL, KEY, SECRET, PASSWORD, TOKEN): use secret_names."
  }
}

variable "secret_names" {
  description = "Environment variables Hearth reads from Secrets Manager. Terraform creates an empty secret for each (no value in the state); the operator puts the value."
  type        = list(string)
  default     = ["DATABASE_URL", "HEARTH_MIGRATION_DATABASE_URL", "HEARTH_APP_SESSION_KEY"]
}

variable "bedrock_region" {
  description = "HEARTH_BEDROCK_REGION for AI summaries (tenants opt in, BAA required); null leaves summaries extractive."
  type        = string
  default     = null
}

variable "bedrock_model_arns" {
  description = "Bedrock foundation-model or inference-profile ARNs the task role may invoke; empty = no Bedrock permission at all."
  type        = list(string)
  default     = []
}

variable "exports_bucket_arn" {
  description = "ARN of the bulk-export bucket (read/write for the task)."
  type        = string
}

variable "audit_bucket_arn" {
  description = "ARN of the audit-archive bucket (write and read, never delete, for the task)."
  type        = string
}

variable "database_kms_key_arn" {
  description = "KMS key of the secrets (decrypted by the execution role when a task starts)."
  type        = string
}

variable "storage_kms_key_arn" {
  description = "KMS key of the export bucket and the ECR repository."
  type        = string
}

variable "audit_kms_key_arn" {
  description = "KMS key of the audit-archive bucket."
  type        = string
}

variable "logs_kms_key_arn" {
  description = "KMS key of the log groups."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the task log groups in days (at least 2190, six years)."
  type        = number
  default     = 2192

  validation {
    condition     = var.log_retention_days >= 2190
    error_message = "log_retention_days must be at least 2190 (six years)."
  }
}

variable "enable_metrics_agent" {
  description = "Run the CloudWatch agent beside Hearth to turn its Prometheus counters (HL7 v2 ACK codes, HTTP statuses) into CloudWatch metrics (namespace Hearth). The MLLP NAK-rate alarm needs it."
  type        = bool
  default     = true
}

variable "metrics_agent_image_tag" {
  description = "Tag of public.ecr.aws/cloudwatch-agent/cloudwatch-agent, pulled through this account's ECR pull-through cache."
  type        = string
  default     = "latest"
}

variable "metrics_namespace" {
  description = "CloudWatch namespace of the metrics the agent publishes."
  type        = string
  default     = "Hearth"
}
