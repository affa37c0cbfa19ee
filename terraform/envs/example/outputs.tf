output "public_base_url" {
  description = "HEARTH_PUBLIC_BASE_URL of this deployment."
  value       = local.public_base_url
}

output "fhir_base_urls" {
  description = "FHIR base URL per tenant (https://{host}/fhir/{tenant}): what EHRs and partners configure."
  value       = { for t in var.tenants : t => "${local.public_base_url}/fhir/${t}" }
}

output "smart_app_jwks_urls" {
  description = "SMART app client JWKS URL per tenant (https://{host}/app/{tenant}/jwks): register it at the EHR for private_key_jwt."
  value       = { for t in var.tenants : t => "${local.public_base_url}/app/${t}/jwks" }
}

output "smart_launch_url" {
  description = "SMART EHR launch URL (the EHR adds iss and launch)."
  value       = "${local.public_base_url}/app/launch"
}

output "smart_redirect_uri" {
  description = "SMART redirect URI (one for every tenant)."
  value       = "${local.public_base_url}/app/callback"
}

output "backend_services_jwks_urls" {
  description = "Per-tenant JWKS of Hearth's authorization server (verifies tokens Hearth issues) at /fhir/{tenant}/auth/jwks."
  value       = { for t in var.tenants : t => "${local.public_base_url}/fhir/${t}/auth/jwks" }
}

output "mllp_endpoints" {
  description = "MLLP over TLS endpoint per hospital (host:port); the interface engine must connect from the listed ranges."
  value       = { for h, src in var.mllp_sources : h => "${var.mllp_hostname}:${src.port}" }
}

output "alb_dns_name" {
  description = "Point api_hostname at this name (CNAME or alias) when Route 53 is not managed here."
  value       = module.ingress.alb_dns_name
}

output "nlb_dns_name" {
  description = "Point mllp_hostname at this name when Route 53 is not managed here."
  value       = module.ingress.nlb_dns_name
}

output "ecr_repository_url" {
  description = "Push the Hearth image here, tagged with image_tag."
  value       = module.compute.ecr_repository_url
}

output "secret_arns" {
  description = "Secrets to fill (DATABASE_URL, HEARTH_MIGRATION_DATABASE_URL, HEARTH_APP_SESSION_KEY)."
  value       = module.compute.secret_arns
}

output "db_cluster_arn" {
  description = "Aurora cluster ARN (for the RDS Data API during the role setup)."
  value       = module.database.cluster_arn
}

output "db_master_user_secret_arn" {
  description = "RDS-managed secret of the master user (role setup only)."
  value       = module.database.master_user_secret_arn
}

output "db_writer_endpoint" {
  description = "Host of DATABASE_URL and HEARTH_MIGRATION_DATABASE_URL."
  value       = module.database.writer_endpoint
}

output "ecs_cluster_name" {
  description = "ECS cluster (for one-off `aws ecs run-task` commands)."
  value       = module.compute.cluster_name
}

output "ecs_service_name" {
  description = "ECS service of Hearth."
  value       = module.compute.service_name
}

output "task_definition_family" {
  description = "Task definition family (one-off tasks use it with a command override)."
  value       = module.compute.task_definition_family
}

output "task_subnet_ids" {
  description = "Private subnets for one-off tasks."
  value       = module.network.app_subnet_ids
}

output "task_security_group_id" {
  description = "Security group for one-off tasks."
  value       = module.compute.task_security_group_id
}

output "alarm_topic_arn" {
  description = "SNS topic of the alarms."
  value       = module.audit.alarm_topic_arn
}
