output "log_bucket_id" {
  description = "Name of the access-log bucket (S3 server access logs, ALB and NLB access logs)."
  value       = aws_s3_bucket.logs.id
}

output "log_bucket_arn" {
  description = "ARN of the access-log bucket."
  value       = aws_s3_bucket.logs.arn
}

output "exports_bucket_id" {
  description = "Name of the bulk-export bucket."
  value       = aws_s3_bucket.exports.id
}

output "exports_bucket_arn" {
  description = "ARN of the bulk-export bucket."
  value       = aws_s3_bucket.exports.arn
}

output "audit_bucket_id" {
  description = "Name of the audit-archive bucket (Object Lock COMPLIANCE)."
  value       = aws_s3_bucket.audit.id
}

output "audit_bucket_arn" {
  description = "ARN of the audit-archive bucket."
  value       = aws_s3_bucket.audit.arn
}
