# The reader role that the headroom exporters assume in a target account. Its
# permissions are the policy documents in deploy/iam/, read as they are: they are the
# one source of truth, so this module names no read action of its own.

locals {
  # Each exporter's policy, by its name in var.exporters; the file is named after the
  # exporter's binary (servicequotas_exporter: servicequotas-exporter.json).
  policy_files = {
    ssm           = "${path.module}/../../iam/ssm-quota-exporter.json"
    ecr           = "${path.module}/../../iam/ecr-quota-exporter.json"
    s3            = "${path.module}/../../iam/s3-quota-exporter.json"
    servicequotas = "${path.module}/../../iam/servicequotas-exporter.json"
  }

  # The statement of the ECR policy that only the optional ecr_lifecycle_policies
  # collector needs; left out unless var.ecr_lifecycle_policies is true.
  ecr_lifecycle_sid = "OptionalCollectorEcrLifecyclePolicies"

  documents = {
    for name in toset(var.exporters) : name => jsondecode(file(local.policy_files[name]))
  }

  policies = {
    for name, doc in local.documents : name => jsonencode(merge(doc, {
      Statement = [
        for s in doc.Statement : s
        if var.ecr_lifecycle_policies || try(s.Sid, "") != local.ecr_lifecycle_sid
      ]
    }))
  }
}

# Only the exporter's own role may assume this one; with external_id set, only when it
# passes that external ID.
data "aws_iam_policy_document" "trust" {
  statement {
    sid    = "HeadroomExporterAssumesThisRole"
    effect = "Allow"
    # TagSession: with EKS Pod Identity the exporter's session carries transitive
    # session tags, which AssumeRole passes on to this role's session.
    actions = ["sts:AssumeRole", "sts:TagSession"]

    principals {
      type        = "AWS"
      identifiers = [var.exporter_role_arn]
    }

    dynamic "condition" {
      for_each = var.external_id == null ? [] : [var.external_id]
      content {
        test     = "StringEquals"
        variable = "sts:ExternalId"
        values   = [condition.value]
      }
    }
  }
}

resource "aws_iam_role" "reader" {
  name               = var.role_name
  description        = "Read-only access for the headroom quota exporters"
  assume_role_policy = data.aws_iam_policy_document.trust.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "exporter" {
  for_each = local.policies

  # headroom-ssm-quota-exporter, ..., headroom-servicequotas-exporter: the file's name.
  name   = "headroom-${trimsuffix(basename(local.policy_files[each.key]), ".json")}"
  role   = aws_iam_role.reader.id
  policy = each.value
}
