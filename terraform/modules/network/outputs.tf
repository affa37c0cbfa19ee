output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.this.id
}

output "vpc_cidr_block" {
  description = "IPv4 CIDR of the VPC."
  value       = aws_vpc.this.cidr_block
}

output "public_subnet_ids" {
  description = "Public subnets (load balancers and NAT gateways only)."
  value       = aws_subnet.public[*].id
}

output "app_subnet_ids" {
  description = "Private subnets for the Hearth tasks."
  value       = aws_subnet.app[*].id
}

output "db_subnet_ids" {
  description = "Private subnets without a route out of the VPC, for the database."
  value       = aws_subnet.db[*].id
}

output "interface_endpoint_dns" {
  description = "Regional DNS name of each interface endpoint, by service (e.g. bedrock-runtime)."
  value       = { for k, v in aws_vpc_endpoint.interface : k => v.dns_entry[0].dns_name }
}

output "flow_log_group_name" {
  description = "CloudWatch Logs group of the VPC flow logs."
  value       = aws_cloudwatch_log_group.flow_logs.name
}
