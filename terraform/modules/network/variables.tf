variable "name" {
  description = "Name prefix for every resource of this deployment (e.g. \"hearth-prod\")."
  type        = string
}

variable "cidr_block" {
  description = "IPv4 CIDR of the VPC. Split into /20 subnets: three public (load balancers only), three private for tasks, three private for the database."
  type        = string
  default     = "10.40.0.0/16"
}

variable "az_count" {
  description = "Number of availability zones to spread subnets over (the database and the service need at least 2; 3 is the default)."
  type        = number
  default     = 3

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 3
    error_message = "az_count must be 2 or 3."
  }
}

variable "availability_zones" {
  description = "Names of the availability zones to use (at least az_count of them); null = the region's zones a, b and c."
  type        = list(string)
  default     = null
}

variable "nat_gateway_per_az" {
  description = "One NAT gateway per AZ (true) or one shared NAT gateway (false, cheaper, not zone-redundant). Hearth needs outbound HTTPS to the EHRs' FHIR and OAuth endpoints and to identity providers' JWKS."
  type        = bool
  default     = true
}

variable "logs_kms_key_arn" {
  description = "ARN of the KMS key that encrypts the flow-log group."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the VPC flow-log group in days. HIPAA documentation is kept six years: values below 2190 are refused. 2192 is the nearest value CloudWatch accepts."
  type        = number
  default     = 2192

  validation {
    condition     = var.log_retention_days >= 2190
    error_message = "log_retention_days must be at least 2190 (six years)."
  }
}

variable "interface_endpoint_services" {
  description = "AWS services reached through interface VPC endpoints, so their traffic never leaves the AWS network (S3 has a gateway endpoint in addition)."
  type        = list(string)
  default     = ["kms", "secretsmanager", "ecr.api", "ecr.dkr", "logs", "bedrock-runtime", "sts"]
}
