# The orchestrator reads both at start (ECS injects them as secrets); the
# playground's agent reads the access key the same way.

resource "aws_ssm_parameter" "backend_address" {
  name        = "/${var.name}/backend-address"
  description = "HOST:PORT of sidetrace-backend's TLS ingest."
  type        = "String"
  value       = var.backend_address
}

resource "aws_ssm_parameter" "access_key" {
  name        = "/${var.name}/access-key"
  description = "sidetrace access key (agents, orchestrator, backend)."
  type        = "SecureString"
  value       = var.access_key
}
