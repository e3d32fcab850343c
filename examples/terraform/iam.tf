# Task execution role: pulls images, writes logs, and reads the two SSM
# parameters that ECS injects as secrets (SIDETRACE_BACKEND,
# SIDETRACE_ACCESS_KEY). SecureStrings encrypted with the AWS-managed
# aws/ssm key need no extra kms:Decrypt grant.

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "read_parameters" {
  statement {
    actions = ["ssm:GetParameters"]
    resources = [
      aws_ssm_parameter.backend_address.arn,
      aws_ssm_parameter.access_key.arn,
    ]
  }
}

resource "aws_iam_role_policy" "read_parameters" {
  name   = "read-sidetrace-parameters"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.read_parameters.json
}

# The attacker instance needs no AWS permissions; EC2 Instance Connect
# through the endpoint uses the caller's own IAM identity.
