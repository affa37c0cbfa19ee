output "trail_arn" {
  description = "ARN of the CloudTrail trail."
  value       = aws_cloudtrail.this.arn
}

output "trail_bucket_id" {
  description = "Bucket of CloudTrail log files and AWS Config snapshots (Object Lock COMPLIANCE)."
  value       = aws_s3_bucket.trail.id
}

output "alarm_topic_arn" {
  description = "SNS topic of the alarms (KMS-encrypted)."
  value       = aws_sns_topic.alarms.arn
}
