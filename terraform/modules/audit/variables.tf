variable "name" {
  description = "Name prefix for every resource of this deployment."
  type        = string
}

variable "audit_kms_key_arn" {
  description = "KMS key of the trail bucket and CloudTrail log files."
  type        = string
}

variable "logs_kms_key_arn" {
  description = "KMS key of the CloudTrail log group and the alarm topic."
  type        = string
}

variable "log_bucket_id" {
  description = "Bucket receiving the trail bucket's S3 server access logs."
  type        = string
}

variable "audit_retention_days" {
  description = "Object Lock retention (COMPLIANCE) of CloudTrail and AWS Config files, in days; default about 7 years."
  type        = number
  default     = 2557

  validation {
    condition     = var.audit_retention_days >= 2190
    error_message = "audit_retention_days must be at least 2190 (six years)."
  }
}

variable "log_retention_days" {
  description = "Retention of the CloudTrail log group in days (at least 2190, six years)."
  type        = number
  default     = 2192

  validation {
    condition     = var.log_retention_days >= 2190
    error_message = "log_retention_days must be at least 2190 (six years)."
  }
}

variable "data_event_bucket_arns" {
  description = "Buckets whose object-level reads and writes CloudTrail records (the export and audit-archive buckets: PHI leaves through them)."
  type        = list(string)
  default     = []
}

variable "alarm_emails" {
  description = "E-mail addresses subscribed to the alarm topic (each must confirm the subscription)."
  type        = list(string)
  default     = []
}

variable "alb_arn_suffix" {
  description = "ARN suffix of the ALB (for the 5xx-rate alarm)."
  type        = string
}

variable "app_target_group_arn_suffix" {
  description = "ARN suffix of the HTTP target group (for the healthy-host alarm)."
  type        = string
}

variable "alb_5xx_rate_threshold_percent" {
  description = "Alarm when more than this percentage of ALB requests end in 5xx (target or ALB) over 5 minutes, twice in a row."
  type        = number
  default     = 5
}

variable "app_log_group_name" {
  description = "Log group of Hearth's JSON logs (for the metric filter on unstored HL7 messages)."
  type        = string
}

variable "metrics_namespace" {
  description = "CloudWatch namespace of Hearth's metrics (published by the metrics agent and by the metric filters)."
  type        = string
  default     = "Hearth"
}

variable "mllp_nak_rate_threshold_percent" {
  description = "Alarm when more than this percentage of HL7 v2 messages are answered AE/AR (or CE/CR) over 15 minutes."
  type        = number
  default     = 5
}

variable "mllp_nak_min_messages" {
  description = "The NAK-rate alarm ignores 15-minute periods with fewer messages than this."
  type        = number
  default     = 20
}

variable "db_cluster_identifier" {
  description = "Aurora cluster identifier (for the CPU alarm)."
  type        = string
}

variable "db_instance_identifiers" {
  description = "Aurora instance identifiers (for the free local storage alarms)."
  type        = list(string)
}

variable "db_cpu_threshold_percent" {
  description = "Alarm when the cluster's CPU stays above this percentage for 15 minutes."
  type        = number
  default     = 80
}

variable "db_free_local_storage_threshold_bytes" {
  description = "Alarm when an Aurora instance's free local storage (temporary files, sorts) falls below this many bytes. Aurora's cluster volume itself grows automatically."
  type        = number
  default     = 5368709120
}

variable "enable_config_recorder" {
  description = "Create the AWS Config recorder and delivery channel (one per account and region: set false where Control Tower or another stack already records, and keep the rules)."
  type        = bool
  default     = true
}
