variable "region" {
  description = "AWS region of the deployment (must offer Aurora PostgreSQL 16 and, if used, Bedrock)."
  type        = string
  default     = "us-east-1"
}

variable "name" {
  description = "Name of this deployment, prefix of every resource (lowercase letters, digits and hyphens; at most 20 characters so derived names fit AWS limits)."
  type        = string
  default     = "hearth-example"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,19}$", var.name))
    error_message = "name must be 2-20 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "tags" {
  description = "Tags added to every resource (besides Application, Environment and ManagedBy)."
  type        = map(string)
  default     = {}
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC."
  type        = string
  default     = "10.40.0.0/16"
}

variable "availability_zones" {
  description = "Availability zone names for the subnets (three); null = the region's zones a, b and c."
  type        = list(string)
  default     = null
}

variable "api_hostname" {
  description = "Host name of the FHIR API and the SMART app; HEARTH_PUBLIC_BASE_URL becomes https://{this}."
  type        = string
  default     = "fhir.example.org"
}

variable "mllp_hostname" {
  description = "Host name interface engines connect to for MLLP over TLS."
  type        = string
  default     = "mllp.example.org"
}

variable "certificate_arn" {
  description = "ACM certificate (same region) covering api_hostname, and mllp_hostname unless mllp_certificate_arn is set."
  type        = string
  default     = "arn:aws:acm:us-east-1:111122223333:certificate/00000000-0000-0000-0000-000000000000"
}

variable "mllp_certificate_arn" {
  description = "Separate ACM certificate for mllp_hostname; null to use certificate_arn."
  type        = string
  default     = null
}

variable "route53_zone_id" {
  description = "Route 53 hosted zone in which to create the two host names; null to create the DNS records elsewhere."
  type        = string
  default     = null
}

variable "https_ingress_cidrs" {
  description = "IPv4 ranges allowed to reach HTTPS (443). Browsers and EHRs on the internet use the API and the app: everyone by default."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "mllp_sources" {
  description = "Hospitals sending HL7 v2: NLB/Hearth port of the MLLP listener and the interface engine's IPv4 ranges (only those can connect). Each port needs a [[mllp.listeners]] entry with listen = \"0.0.0.0:{port}\" in the config file baked into the image."
  type = map(object({
    port        = number
    cidr_blocks = list(string)
  }))
  default = {
    "st-mary" = { port = 2575, cidr_blocks = ["203.0.113.0/28"] }
  }
}

variable "mllp_internal" {
  description = "Make the MLLP NLB internal (hospitals over VPN or Direct Connect)."
  type        = bool
  default     = false
}

variable "image_tag" {
  description = "Tag of the Hearth image pushed to the deployment's ECR repository (immutable tags: a version or git SHA)."
  type        = string
  default     = "0.1.0"
}

variable "config_file_path" {
  description = "Path of hearth.toml inside the image (HEARTH_CONFIG), needed for MLLP listeners; null for environment-only configuration."
  type        = string
  default     = "/etc/hearth/hearth.toml"
}

variable "desired_count" {
  description = "Number of Hearth tasks. Start with 0 and raise it once the image is pushed and the secrets have values (docs/deploy.md)."
  type        = number
  default     = 0
}

variable "task_cpu" {
  description = "Fargate CPU units per task."
  type        = number
  default     = 1024
}

variable "task_memory" {
  description = "Fargate memory (MiB) per task."
  type        = number
  default     = 2048
}

variable "enable_execute_command" {
  description = "ECS Exec into running tasks. Off: the image has no shell; run one-off commands as tasks."
  type        = bool
  default     = false
}

variable "hearth_environment" {
  description = "Further non-secret Hearth settings as environment variables (see hearth.example.toml)."
  type        = map(string)
  default = {
    HEARTH_APP_IDLE_TIMEOUT_SECS = "900"
  }
}

variable "bedrock_region" {
  description = "Region for Bedrock summaries (HEARTH_BEDROCK_REGION); null keeps summaries extractive."
  type        = string
  default     = null
}

variable "bedrock_model_arns" {
  description = "Bedrock model or inference-profile ARNs Hearth may invoke (InvokeModel is granted on these only)."
  type        = list(string)
  default     = []
}

variable "db_engine_version" {
  description = "Aurora PostgreSQL engine version (16.x ships pgvector, pg_trgm, btree_gist)."
  type        = string
  default     = "16.6"
}

variable "db_instance_class" {
  description = "Aurora instance class."
  type        = string
  default     = "db.r6g.large"
}

variable "db_instance_count" {
  description = "Aurora instances (writer + readers)."
  type        = number
  default     = 2
}

variable "db_backup_retention_days" {
  description = "Aurora automated backup / PITR retention (30-35 days)."
  type        = number
  default     = 35
}

variable "audit_retention_days" {
  description = "Object Lock COMPLIANCE retention of the audit archive and trail buckets, in days (default about 7 years)."
  type        = number
  default     = 2557
}

variable "log_retention_days" {
  description = "Retention of every CloudWatch Logs group in days (at least 2190; 2192 is the nearest accepted value)."
  type        = number
  default     = 2192
}

variable "alarm_emails" {
  description = "E-mail addresses that receive alarms."
  type        = list(string)
  default     = []
}

variable "waf_rate_limit" {
  description = "WAF: requests per 5 minutes per client IP before blocking."
  type        = number
  default     = 3000
}

variable "enable_config_recorder" {
  description = "Create the AWS Config recorder (false where the account already has one, e.g. Control Tower)."
  type        = bool
  default     = true
}

variable "key_administrator_arns" {
  description = "IAM roles allowed to administer the KMS keys (besides the account root)."
  type        = list(string)
  default     = []
}

variable "tenants" {
  description = "Tenant ids created in Hearth (`hearth tenant create`); used only to print their URLs."
  type        = list(string)
  default     = ["st-mary"]
}
