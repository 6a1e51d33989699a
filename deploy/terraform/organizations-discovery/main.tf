# The permissions that account discovery needs, for the identity that reads AWS
# Organizations: the exporter's own role when it runs with the credentials of the
# management account or a delegated administrator, else the role that the exporter's
# config names in organization.role_arn. The policy is the document in deploy/iam/,
# read as it is: it is the one source of truth, so this module names no action of its
# own.

locals {
  policy_file = "${path.module}/../../iam/organizations-discovery.json"
}

resource "aws_iam_policy" "discovery" {
  name        = var.policy_name
  description = "Lets the headroom exporters discover the member accounts of the organization"
  policy      = file(local.policy_file)
}

resource "aws_iam_role_policy_attachment" "discovery" {
  role       = var.role_name
  policy_arn = aws_iam_policy.discovery.arn
}
