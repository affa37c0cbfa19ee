# Example environment: one Hearth deployment in one region. Copy this folder per
# environment and fill in terraform.tfvars (see terraform.tfvars.example).

locals {
  public_base_url = "https://${var.api_hostname}"
}

module "keys" {
  source = "../../modules/keys"

  name                   = var.name
  key_administrator_arns = var.key_administrator_arns
}

module "network" {
  source = "../../modules/network"

  name               = var.name
  cidr_block         = var.vpc_cidr
  availability_zones = var.availability_zones
  logs_kms_key_arn   = module.keys.logs_key_arn
  log_retention_days = var.log_retention_days
}

module "storage" {
  source = "../../modules/storage"

  name                 = var.name
  storage_kms_key_arn  = module.keys.storage_key_arn
  audit_kms_key_arn    = module.keys.audit_key_arn
  audit_retention_days = var.audit_retention_days
}

module "ingress" {
  source = "../../modules/ingress"

  name                 = var.name
  vpc_id               = module.network.vpc_id
  vpc_cidr_block       = module.network.vpc_cidr_block
  public_subnet_ids    = module.network.public_subnet_ids
  certificate_arn      = var.certificate_arn
  mllp_certificate_arn = var.mllp_certificate_arn
  https_ingress_cidrs  = var.https_ingress_cidrs
  mllp_sources         = var.mllp_sources
  mllp_internal        = var.mllp_internal
  log_bucket_id        = module.storage.log_bucket_id
  logs_kms_key_arn     = module.keys.logs_key_arn
  log_retention_days   = var.log_retention_days
  waf_rate_limit       = var.waf_rate_limit
  route53_zone_id      = var.route53_zone_id
  api_hostname         = var.api_hostname
  mllp_hostname        = var.mllp_hostname
}

module "compute" {
  source = "../../modules/compute"

  name                   = var.name
  vpc_id                 = module.network.vpc_id
  vpc_cidr_block         = module.network.vpc_cidr_block
  subnet_ids             = module.network.app_subnet_ids
  alb_security_group_id  = module.ingress.alb_security_group_id
  nlb_security_group_id  = module.ingress.nlb_security_group_id
  app_target_group_arn   = module.ingress.app_target_group_arn
  mllp_target_group_arns = module.ingress.mllp_target_group_arns
  public_base_url        = local.public_base_url
  image_tag              = var.image_tag
  config_file_path       = var.config_file_path
  cpu                    = var.task_cpu
  memory                 = var.task_memory
  desired_count          = var.desired_count
  enable_execute_command = var.enable_execute_command
  extra_environment      = var.hearth_environment
  bedrock_region         = var.bedrock_region
  bedrock_model_arns     = var.bedrock_model_arns
  exports_bucket_arn     = module.storage.exports_bucket_arn
  audit_bucket_arn       = module.storage.audit_bucket_arn
  database_kms_key_arn   = module.keys.database_key_arn
  storage_kms_key_arn    = module.keys.storage_key_arn
  audit_kms_key_arn      = module.keys.audit_key_arn
  logs_kms_key_arn       = module.keys.logs_key_arn
  log_retention_days     = var.log_retention_days
}

module "database" {
  source = "../../modules/database"

  name                      = var.name
  vpc_id                    = module.network.vpc_id
  subnet_ids                = module.network.db_subnet_ids
  client_security_group_ids = [module.compute.task_security_group_id]
  kms_key_arn               = module.keys.database_key_arn
  logs_kms_key_arn          = module.keys.logs_key_arn
  engine_version            = var.db_engine_version
  instance_class            = var.db_instance_class
  instance_count            = var.db_instance_count
  backup_retention_days     = var.db_backup_retention_days
  log_retention_days        = var.log_retention_days
}

module "audit" {
  source = "../../modules/audit"

  name                        = var.name
  audit_kms_key_arn           = module.keys.audit_key_arn
  logs_kms_key_arn            = module.keys.logs_key_arn
  log_bucket_id               = module.storage.log_bucket_id
  audit_retention_days        = var.audit_retention_days
  log_retention_days          = var.log_retention_days
  data_event_bucket_arns      = [module.storage.exports_bucket_arn, module.storage.audit_bucket_arn]
  alarm_emails                = var.alarm_emails
  alb_arn_suffix              = module.ingress.alb_arn_suffix
  app_target_group_arn_suffix = module.ingress.app_target_group_arn_suffix
  app_log_group_name          = module.compute.app_log_group_name
  db_cluster_identifier       = module.database.cluster_identifier
  db_instance_identifiers     = module.database.instance_identifiers
  enable_config_recorder      = var.enable_config_recorder
}
