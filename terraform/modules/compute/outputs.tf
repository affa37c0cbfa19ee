output "cluster_name" {
  description = "ECS cluster name."
  value       = aws_ecs_cluster.this.name
}

output "service_name" {
  description = "ECS service name."
  value       = aws_ecs_service.hearth.name
}

output "task_definition_family" {
  description = "Task definition family (one-off commands: `aws ecs run-task --task-definition {family}` with a command override)."
  value       = aws_ecs_task_definition.hearth.family
}

output "task_security_group_id" {
  description = "Security group of the Hearth tasks (also for one-off tasks)."
  value       = aws_security_group.task.id
}

output "ecr_repository_url" {
  description = "Push the Hearth image here."
  value       = aws_ecr_repository.hearth.repository_url
}

output "secret_arns" {
  description = "Secrets Manager secret ARN by environment variable name (put the values with `aws secretsmanager put-secret-value`)."
  value       = { for k, s in aws_secretsmanager_secret.hearth : k => s.arn }
}

output "app_log_group_name" {
  description = "Log group of Hearth's JSON logs."
  value       = aws_cloudwatch_log_group.app.name
}

output "task_role_arn" {
  description = "Task role ARN."
  value       = aws_iam_role.task.arn
}
