variable "exporter_role_arn" {
  description = "ARN of the role the headroom exporters run as (for example their IRSA role in the cluster's account). Only this role may assume the reader role."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$", var.exporter_role_arn))
    error_message = "exporter_role_arn must be an IAM role ARN, such as arn:aws:iam::111111111111:role/headroom-exporter."
  }
}

variable "external_id" {
  description = "If set, the exporter must pass this external ID when it assumes the role (external_id in the exporter's accounts config). Null: no external ID condition."
  type        = string
  default     = null

  validation {
    condition = var.external_id == null ? true : (
      length(var.external_id) >= 2 && length(var.external_id) <= 1224 &&
      can(regex("^[A-Za-z0-9+=,.@:/_-]+$", var.external_id))
    )
    error_message = "external_id must be 2 to 1224 characters of letters, digits and +=,.@:/_-."
  }
}

variable "exporters" {
  description = "Which exporters may read this account: any of \"ssm\", \"ecr\", \"s3\", \"servicequotas\". Each one's policy comes from deploy/iam/ (ssm-quota-exporter.json, ecr-quota-exporter.json, s3-quota-exporter.json, servicequotas-exporter.json)."
  type        = list(string)
  default     = ["ssm", "ecr", "s3", "servicequotas"]

  validation {
    condition     = length(var.exporters) > 0 && alltrue([for e in var.exporters : contains(["ssm", "ecr", "s3", "servicequotas"], e)])
    error_message = "exporters must list at least one of \"ssm\", \"ecr\", \"s3\", \"servicequotas\"."
  }
}

variable "ecr_lifecycle_policies" {
  description = "Also allow what the optional ecr_lifecycle_policies collector reads. Only matters when exporters includes \"ecr\"."
  type        = bool
  default     = false
}

variable "role_name" {
  description = "Name of the reader role. The exporter's own policy (deploy/iam/assume-role-policy.json) allows assuming roles named headroom-reader; change both together (and organization.role_name in the exporters' config, with account discovery)."
  type        = string
  default     = "headroom-reader"
}

variable "tags" {
  description = "Tags for the role."
  type        = map(string)
  default     = {}
}
