output "cluster_identifier" {
  description = "Aurora cluster identifier."
  value       = aws_rds_cluster.this.cluster_identifier
}

output "cluster_arn" {
  description = "Aurora cluster ARN (the resource ARN for `aws rds-data execute-statement`)."
  value       = aws_rds_cluster.this.arn
}

output "writer_endpoint" {
  description = "Writer endpoint: the host of DATABASE_URL and HEARTH_MIGRATION_DATABASE_URL."
  value       = aws_rds_cluster.this.endpoint
}

output "reader_endpoint" {
  description = "Reader endpoint (not used by Hearth today)."
  value       = aws_rds_cluster.this.reader_endpoint
}

output "port" {
  description = "PostgreSQL port."
  value       = aws_rds_cluster.this.port
}

output "database_name" {
  description = "Name of Hearth's database."
  value       = aws_rds_cluster.this.database_name
}

output "master_user_secret_arn" {
  description = "Secrets Manager secret (RDS-managed, rotated) with the master user's credentials."
  value       = aws_rds_cluster.this.master_user_secret[0].secret_arn
}

output "instance_identifiers" {
  description = "Identifiers of the cluster instances (for per-instance alarms)."
  value       = aws_rds_cluster_instance.this[*].identifier
}

output "security_group_id" {
  description = "Security group of the database."
  value       = aws_security_group.db.id
}
