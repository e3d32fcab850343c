variable "region" {
  description = "AWS region to deploy into."
  type        = string
  default     = "us-east-1"
}

variable "name" {
  description = "Prefix for every resource name."
  type        = string
  default     = "sidetrace-demo"
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC; the subnets are carved out of it."
  type        = string
  default     = "10.42.0.0/16"
}

variable "agent_image" {
  description = "Image holding /opt/sidetrace/bin/sidetrace-agent in a volume (docker/Dockerfile, target agent), pushed to ECR."
  type        = string
}

variable "orchestrator_image" {
  description = "sidetrace-orchestrator image (docker/Dockerfile, target orchestrator), pushed to ECR."
  type        = string
}

variable "playground_image" {
  description = "Security playground image (docker/Dockerfile, target playground), pushed to ECR."
  type        = string
}

variable "backend_address" {
  description = "HOST:PORT of sidetrace-backend's TLS ingest (6443), reachable from the private subnets. Stored in SSM Parameter Store."
  type        = string
}

variable "access_key" {
  description = "Access key shared by the agents, the orchestrator and the backend. Stored in SSM Parameter Store as a SecureString."
  type        = string
  sensitive   = true
}

variable "attacker_instance_type" {
  description = "Instance type of the attacker EC2 instance."
  type        = string
  default     = "t3.micro"
}
