output "role_arn" {
  description = "ARN of the reader role: the role_arn of this account in the exporters' config."
  value       = aws_iam_role.reader.arn
}

output "role_name" {
  description = "Name of the reader role."
  value       = aws_iam_role.reader.name
}

output "policy_names" {
  description = "The inline policies attached to the role, by exporter."
  value       = { for name, p in aws_iam_role_policy.exporter : name => p.name }
}
