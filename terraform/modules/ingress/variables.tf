variable "name" {
  description = "Name prefix for every resource of this deployment."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the load balancers."
  type        = string
}

variable "vpc_cidr_block" {
  description = "CIDR of the VPC: the load balancers may only send traffic into it."
  type        = string
}

variable "public_subnet_ids" {
  description = "Subnets of the load balancers (public for internet-facing ones)."
  type        = list(string)
}

variable "certificate_arn" {
  description = "ACM certificate for the HTTPS listener (the FHIR/app host name)."
  type        = string
}

variable "mllp_certificate_arn" {
  description = "ACM certificate for the MLLP TLS listeners; null reuses certificate_arn (it must then cover the MLLP host name too)."
  type        = string
  default     = null
}

variable "ssl_policy" {
  description = "TLS policy of the HTTPS and MLLP listeners (TLS 1.3 and 1.2 only)."
  type        = string
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"
}

variable "https_ingress_cidrs" {
  description = "IPv4 ranges allowed to reach the HTTPS listener (443). The FHIR API and the SMART app are used from browsers and EHRs on the internet, so the default is everyone; narrow it for a private deployment."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "app_port" {
  description = "Port Hearth's HTTP server listens on in the task (HEARTH_LISTEN)."
  type        = number
  default     = 8080
}

variable "mllp_sources" {
  description = "HL7 v2 senders by hospital: the NLB port of its MLLP listener (one Hearth listener, so one tenant, per port; several hospitals may share a port) and the IPv4 ranges its interface engine connects from. Only these ranges can reach that port."
  type = map(object({
    port        = number
    cidr_blocks = list(string)
  }))
  default = {}

  validation {
    condition     = alltrue([for k, v in var.mllp_sources : !contains(v.cidr_blocks, "0.0.0.0/0")])
    error_message = "mllp_sources may not open a port to 0.0.0.0/0: list the hospitals' ranges."
  }
}

variable "mllp_internal" {
  description = "Make the MLLP load balancer internal (hospitals connect over VPN or Direct Connect) instead of internet-facing."
  type        = bool
  default     = false
}

variable "log_bucket_id" {
  description = "Bucket for ALB and NLB access logs (prefixes alb/ and nlb/)."
  type        = string
}

variable "logs_kms_key_arn" {
  description = "ARN of the KMS key that encrypts the WAF log group."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the WAF log group in days (at least 2190, six years)."
  type        = number
  default     = 2192

  validation {
    condition     = var.log_retention_days >= 2190
    error_message = "log_retention_days must be at least 2190 (six years)."
  }
}

variable "waf_rate_limit" {
  description = "Requests per 5 minutes from one IP address before WAF blocks it (rate-based rule)."
  type        = number
  default     = 3000
}

variable "route53_zone_id" {
  description = "Route 53 hosted zone for the DNS records; null to manage DNS elsewhere."
  type        = string
  default     = null
}

variable "api_hostname" {
  description = "Host name of the FHIR API and the SMART app (e.g. fhir.example.org)."
  type        = string
}

variable "mllp_hostname" {
  description = "Host name of the MLLP endpoint (e.g. mllp.example.org)."
  type        = string
}
