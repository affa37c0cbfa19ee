variable "name" {
  description = "Name prefix for every resource of this deployment; also the cluster identifier."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the database."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets (no route out of the VPC) for the DB subnet group, in at least two AZs."
  type        = list(string)
}

variable "client_security_group_ids" {
  description = "Security groups allowed to reach PostgreSQL (5432): the Hearth tasks."
  type        = list(string)
}

variable "kms_key_arn" {
  description = "ARN of the KMS key for storage, Performance Insights and the master-user secret."
  type        = string
}

variable "logs_kms_key_arn" {
  description = "ARN of the KMS key that encrypts the PostgreSQL log group."
  type        = string
}

variable "engine_version" {
  description = "Aurora PostgreSQL version. Must ship pgvector, pg_trgm and btree_gist (16.x does)."
  type        = string
  default     = "16.6"
}

variable "parameter_group_family" {
  description = "Parameter group family matching engine_version."
  type        = string
  default     = "aurora-postgresql16"
}

variable "instance_class" {
  description = "Instance class of the writer and readers."
  type        = string
  default     = "db.r6g.large"
}

variable "instance_count" {
  description = "Number of instances (1 writer + readers in other AZs). Two or more for failover."
  type        = number
  default     = 2
}

variable "database_name" {
  description = "Name of the database Hearth uses."
  type        = string
  default     = "hearth"
}

variable "master_username" {
  description = "Master user of the cluster (used only to create Hearth's owner and app roles). Its password is generated and rotated by RDS in Secrets Manager."
  type        = string
  default     = "hearth_admin"
}

variable "backup_retention_days" {
  description = "Days of automated backups and point-in-time recovery (30-35)."
  type        = number
  default     = 35

  validation {
    condition     = var.backup_retention_days >= 30 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be between 30 and 35."
  }
}

variable "performance_insights_retention_days" {
  description = "Performance Insights retention (7 is free; 31-731 in multiples of 31 are paid)."
  type        = number
  default     = 7
}

variable "enable_data_api" {
  description = "Enable the RDS Data API, so operators can run the one-time role setup (CREATE ROLE, CREATE EXTENSION) with `aws rds-data execute-statement` and IAM, without a bastion host. Every call is in CloudTrail."
  type        = bool
  default     = true
}

variable "log_retention_days" {
  description = "Retention of the PostgreSQL log group in days (at least 2190, six years)."
  type        = number
  default     = 2192

  validation {
    condition     = var.log_retention_days >= 2190
    error_message = "log_retention_days must be at least 2190 (six years)."
  }
}
