resource "aws_ecs_cluster" "main" {
  name = var.name
}

resource "aws_cloudwatch_log_group" "tasks" {
  name              = "/ecs/${var.name}"
  retention_in_days = 7
}

# Agents reach the orchestrator through the NLB on 6667; the NLB's health
# checks reach /healthz on 8081. With IP targets the NLB does not preserve
# the client address, so both come from inside the VPC.
resource "aws_security_group" "orchestrator" {
  name        = "${var.name}-orchestrator"
  description = "sidetrace-orchestrator tasks"
  vpc_id      = aws_vpc.main.id

  ingress {
    description = "agents (through the NLB)"
    from_port   = 6667
    to_port     = 6667
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr]
  }

  ingress {
    description = "NLB health checks"
    from_port   = 8081
    to_port     = 8081
    protocol    = "tcp"
    cidr_blocks = [var.vpc_cidr]
  }

  egress {
    description = "backend on 6443, ECR, SSM, CloudWatch Logs"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

# The victim: only the attacker may reach it. Egress stays open on purpose:
# the second attack makes it connect out to a mining pool.
resource "aws_security_group" "playground" {
  name        = "${var.name}-playground"
  description = "security playground tasks (deliberately vulnerable)"
  vpc_id      = aws_vpc.main.id

  ingress {
    description     = "the attacker"
    from_port       = 8080
    to_port         = 8080
    protocol        = "tcp"
    security_groups = [aws_security_group.attacker.id]
  }

  egress {
    description = "orchestrator, ECR, SSM, logs, and the attack's outbound connection"
    from_port   = 0
    to_port     = 0
    protocol    = "-1"
    cidr_blocks = ["0.0.0.0/0"]
  }
}
