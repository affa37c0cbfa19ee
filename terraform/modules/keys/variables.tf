variable "name" {
  description = "Name prefix for every resource of this deployment (e.g. \"hearth-prod\"); used in key aliases."
  type        = string
}

variable "deletion_window_in_days" {
  description = "Waiting period before a scheduled key deletion takes effect (7-30 days). Keep the maximum: a deleted key makes its data unreadable."
  type        = number
  default     = 30

  validation {
    condition     = var.deletion_window_in_days >= 7 && var.deletion_window_in_days <= 30
    error_message = "deletion_window_in_days must be between 7 and 30."
  }
}

variable "key_administrator_arns" {
  description = "IAM principals (roles of the platform team) allowed to administer the keys. The account root is always allowed, so IAM policies can delegate; leave empty to rely on IAM alone."
  type        = list(string)
  default     = []
}
