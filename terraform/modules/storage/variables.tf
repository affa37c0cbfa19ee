variable "name" {
  description = "Name prefix for every resource of this deployment; bucket names are \"{name}-{account id}-{purpose}\"."
  type        = string
}

variable "storage_kms_key_arn" {
  description = "ARN of the KMS key for the bulk-export bucket."
  type        = string
}

variable "audit_kms_key_arn" {
  description = "ARN of the KMS key for the audit-archive bucket."
  type        = string
}

variable "audit_retention_days" {
  description = "Object Lock retention (COMPLIANCE mode) of every object version in the audit-archive bucket, in days. Nobody, not even the root user, can shorten it or delete a version before it ends. Default 2557 days (about 7 years)."
  type        = number
  default     = 2557

  validation {
    condition     = var.audit_retention_days >= 2190
    error_message = "audit_retention_days must be at least 2190 (six years)."
  }
}

variable "export_expiration_days" {
  description = "Bulk exports are deleted this many days after they are written (they are copies of data kept in the database)."
  type        = number
  default     = 365
}

variable "access_log_expiration_days" {
  description = "Days to keep S3 server access logs and load-balancer access logs in the log bucket (at least 2190, six years)."
  type        = number
  default     = 2192

  validation {
    condition     = var.access_log_expiration_days >= 2190
    error_message = "access_log_expiration_days must be at least 2190 (six years)."
  }
}

variable "force_destroy" {
  description = "Allow `terraform destroy` to delete non-empty buckets (never in production; Object Lock still protects locked versions)."
  type        = bool
  default     = false
}
