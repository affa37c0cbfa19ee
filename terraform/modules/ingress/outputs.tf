output "alb_arn_suffix" {
  description = "ARN suffix of the ALB (the LoadBalancer dimension of its CloudWatch metrics)."
  value       = aws_lb.alb.arn_suffix
}

output "alb_dns_name" {
  description = "DNS name of the ALB (point the API host name at it)."
  value       = aws_lb.alb.dns_name
}

output "alb_security_group_id" {
  description = "Security group of the ALB."
  value       = aws_security_group.alb.id
}

output "app_target_group_arn" {
  description = "Target group of the Hearth HTTP port."
  value       = aws_lb_target_group.app.arn
}

output "app_target_group_arn_suffix" {
  description = "ARN suffix of the HTTP target group (CloudWatch dimension)."
  value       = aws_lb_target_group.app.arn_suffix
}

output "nlb_dns_name" {
  description = "DNS name of the MLLP NLB (point the MLLP host name at it)."
  value       = aws_lb.nlb.dns_name
}

output "nlb_security_group_id" {
  description = "Security group of the MLLP NLB."
  value       = aws_security_group.nlb.id
}

output "mllp_target_group_arns" {
  description = "Target group ARN per MLLP port (string keys)."
  value       = { for port, tg in aws_lb_target_group.mllp : port => tg.arn }
}

output "web_acl_arn" {
  description = "ARN of the WAF web ACL."
  value       = aws_wafv2_web_acl.this.arn
}
