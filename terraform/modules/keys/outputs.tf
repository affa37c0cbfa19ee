output "database_key_arn" {
  description = "ARN of the KMS key for Aurora, Performance Insights and Secrets Manager."
  value       = aws_kms_key.this["database"].arn
}

output "storage_key_arn" {
  description = "ARN of the KMS key for the bulk-export bucket and ECR."
  value       = aws_kms_key.this["storage"].arn
}

output "logs_key_arn" {
  description = "ARN of the KMS key for CloudWatch Logs groups and the alarm topic."
  value       = aws_kms_key.this["logs"].arn
}

output "audit_key_arn" {
  description = "ARN of the KMS key for the audit store (CloudTrail, AWS Config, audit archives)."
  value       = aws_kms_key.this["audit"].arn
}
