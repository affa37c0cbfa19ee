terraform {
  required_version = ">= 1.6.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
  }

  # Keep the state in S3 with locking (the state holds ARNs and names, no secret values:
  # secrets are put into Secrets Manager outside Terraform). Example:
  #
  # backend "s3" {
  #   bucket       = "example-terraform-state"
  #   key          = "hearth/prod.tfstate"
  #   region       = "us-east-1"
  #   encrypt      = true
  #   use_lockfile = true
  # }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge(var.tags, {
      Application = "hearth"
      Environment = var.name
      ManagedBy   = "terraform"
    })
  }
}
