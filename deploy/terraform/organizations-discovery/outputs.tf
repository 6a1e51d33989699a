output "policy_arn" {
  description = "ARN of the managed policy that grants account discovery (deploy/iam/organizations-discovery.json)."
  value       = aws_iam_policy.discovery.arn
}
