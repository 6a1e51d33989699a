variable "role_name" {
  description = "Name (not ARN) of an existing role in this account that reads AWS Organizations: the exporter's own role, or the role named in organization.role_arn of the exporter's config. This account must be the organization's management account or a delegated administrator."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9+=,.@_-]{1,64}$", var.role_name))
    error_message = "role_name must be a role name (1 to 64 letters, digits and +=,.@_-), without its path or ARN."
  }
}

variable "policy_name" {
  description = "Name of the customer managed policy that this module creates."
  type        = string
  default     = "headroom-organizations-discovery"
}
